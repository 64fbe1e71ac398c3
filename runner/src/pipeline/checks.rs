//! The repository's own checks, from the `.runner.yml` of the commit being run: read right
//! after the checkout (a bad file fails the job at a `pipeline` step before anything is
//! built), run after the build and before the smoke test, so nothing untested is pushed
//! or deployed. Each check runs in a container of its own on the job's engine (a pull
//! request's: the untrusted engine, the closed network, no secrets), with a copy of the
//! checkout at [`TASK_CHECKOUT`]; a failing check ends the job there.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use secrecy::SecretString;
use sha2::Digest;

use super::plan::Step;
use super::steps::Steps;
use super::{JobDirs, JobFailure, StepError};
use crate::adapters::context;
use crate::adapters::engine::{ContainerEngine, Network, PodSpec, TASK_CHECKOUT, TaskNetwork, TaskSpec, copy_logs};
use crate::config::{BuildSettings, Project};
use crate::job::{JobKind, StepState, Trigger};
use crate::joblog::JobLog;
use crate::runfile::{self, ChangedPaths, EventFacts, EventKind, RunFile, ServiceSpec, StepImage, StepSpec};
use crate::store::jobs::Job;
use crate::store::steps as step_store;

/// The file's name at the repository's root.
const FILE: &str = runfile::FILE_NAME;
/// A larger file is refused unread.
const MAX_FILE_BYTES: u64 = runfile::MAX_FILE_BYTES as u64;
/// The most of a checkout copied into a check's container (held in memory while the
/// job's steps run; tar headers count too).
const MAX_CHECKOUT_BYTES: u64 = 256 * 1024 * 1024;
/// The most of a JUnit report read back.
const MAX_REPORT_BYTES: u64 = runfile::junit::MAX_REPORT_BYTES as u64;

/// Reads and checks the commit's `.runner.yml`; `None` when it has none. Its checks get
/// rows of their own after `build`; a bad file fails the job at a `pipeline` row.
pub(super) async fn read(
    steps: &Steps<'_>,
    build: &BuildSettings,
    dirs: &JobDirs,
) -> Result<Option<RunFile>, JobFailure> {
    let read = read_file(&dirs.checkout, build).await;
    let file = match read {
        Ok(None) => return Ok(None),
        Ok(Some(file)) => file,
        Err(message) => {
            insert_rows(steps, Step::Checkout, &[Step::Pipeline.name()]).await?;
            return steps
                .run(Step::Pipeline, Duration::from_secs(5), async {
                    Err(StepError::Failed(message))
                })
                .await;
        }
    };
    let names: Vec<&str> = file.steps.iter().map(|spec| spec.name.as_str()).collect();
    insert_rows(steps, Step::Build, &names).await?;
    steps
        .log
        .system(format!("{FILE}: {} step(s): {}", names.len(), names.join(", ")));
    Ok(Some(file))
}

/// The rows are what the job page and the commit statuses show: a job whose steps cannot
/// be recorded does not run them unseen.
async fn insert_rows(steps: &Steps<'_>, after: Step, names: &[&str]) -> Result<(), JobFailure> {
    let (pool, job) = (&steps.ctx.pool, steps.job.id.get());
    let recorded = async {
        step_store::insert_after(pool, job, after.name(), names).await?;
        // Each shows on the forge as waiting from now.
        crate::store::reports::steps_changed(pool, job).await
    };
    recorded.await.map_err(|error| JobFailure::Step {
        step: Step::Pipeline,
        error: StepError::Failed(format!("cannot record the repository's steps: {error}")),
    })
}

/// The file, parsed against the project's Dockerfile stages and build secrets.
async fn read_file(checkout: &Path, build: &BuildSettings) -> Result<Option<RunFile>, String> {
    let Some(text) = read_repository_file(checkout, FILE, MAX_FILE_BYTES).await? else {
        return Ok(None);
    };
    let dockerfile_path = Path::new(&build.context).join(&build.dockerfile);
    let dockerfile = match read_repository_file(checkout, &dockerfile_path.to_string_lossy(), MAX_FILE_BYTES).await {
        Ok(dockerfile) => dockerfile.unwrap_or_default(),
        // Its stages matter only to steps that name one: say why they cannot be found.
        Err(why) if text.contains("target:") => {
            return Err(format!(
                "{FILE} names Dockerfile stages, but the Dockerfile is unreadable: {why}"
            ));
        }
        Err(_) => String::new(),
    };
    let context = runfile::FileContext {
        secrets: build.secrets.keys().cloned().collect::<BTreeSet<_>>(),
        stages: runfile::dockerfile_stages(&dockerfile),
    };
    let file = runfile::parse(&text, &context).map_err(|error| error.to_string())?;
    Ok(Some(file))
}

/// A regular file of the repository, never through a symbolic link (a stranger's
/// repository could point one at the runner's own files).
async fn read_repository_file(root: &Path, relative: &str, max_bytes: u64) -> Result<Option<String>, String> {
    let path = root.join(relative);
    let metadata = match tokio::fs::symlink_metadata(&path).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{relative}: cannot read it: {error}")),
    };
    if !metadata.is_file() {
        return Err(format!("{relative}: not a regular file of the repository"));
    }
    if metadata.len() > max_bytes {
        return Err(format!("{relative}: larger than {} KiB", max_bytes / 1024));
    }
    context::inside(root, &path).map_err(|e| format!("{relative}: {e}"))?;
    tokio::fs::read_to_string(&path)
        .await
        .map(Some)
        .map_err(|error| format!("{relative}: cannot read it: {error}"))
}

/// Every file the commit changed matches `paths_ignore`: the job ends here, successful,
/// having built and deployed nothing; a `pipeline` row says why.
pub(super) async fn nothing_to_do(steps: &Steps<'_>) -> Result<(), JobFailure> {
    let reason = format!("every changed file matches {FILE}'s paths_ignore: nothing to build or deploy");
    insert_rows(steps, Step::Checkout, &[Step::Pipeline.name()]).await?;
    steps
        .set_state(Step::Pipeline.name(), StepState::Skipped, Some(&reason))
        .await;
    steps.log.system(reason);
    Ok(())
}

/// The `target:` stages the checks name, each built beside the job's image.
pub(super) fn stages(file: Option<&RunFile>) -> Vec<String> {
    let mut stages: Vec<String> = file
        .into_iter()
        .flat_map(|file| &file.steps)
        .flat_map(|spec| std::iter::once(&spec.image).chain(spec.services.iter().map(|s| &s.image)))
        .filter_map(|image| match image {
            StepImage::Stage(stage) => Some(stage.clone()),
            _ => None,
        })
        .collect();
    stages.sort();
    stages.dedup();
    stages
}

/// The image of a stage, as [`super::build`] tags it.
pub(super) fn stage_tag(image: &str, stage: &str) -> String {
    format!("{image}-{stage}")
}

/// Runs the checks in order; the first that fails ends the job.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    steps: &Steps<'_>,
    project: &Project,
    build: &BuildSettings,
    engine: &dyn ContainerEngine,
    dirs: &JobDirs,
    file: &RunFile,
    built: &str,
    kind: JobKind,
    changed: ChangedPaths,
) -> Result<(), JobFailure> {
    let (job, log) = (steps.job, steps.log);
    let facts = EventFacts {
        kind: match (kind, job.trigger) {
            (JobKind::Verify, _) => EventKind::PullRequest,
            // A missed push recovered, or a push delivery sent again, is still that push.
            (_, Trigger::Push | Trigger::Reconcile | Trigger::Replay) => EventKind::Push,
            (_, trigger) => EventKind::Other(trigger.to_string()),
        },
        // A pull request is judged by the branch it would merge into.
        branch: match kind {
            JobKind::Verify => job.base_branch.clone(),
            JobKind::Deploy => job.git_ref.as_str().strip_prefix("refs/heads/").map(str::to_owned),
        },
        changed,
    };
    let mut files: Option<Bytes> = None;
    for spec in &file.steps {
        let step = Step::Check(Arc::from(spec.name.as_str()));
        if let Err(reason) = spec.when.applies(&facts) {
            let reason = reason.to_string();
            log.system(format!("step {}: skipped: {reason}", spec.name.as_str()));
            steps.set_state(step.name(), StepState::Skipped, Some(&reason)).await;
            continue;
        }
        if files.is_none() {
            let root = dirs.checkout.clone();
            let packed = tokio::task::spawn_blocking(move || {
                context::pack_tree(&root, TASK_CHECKOUT.trim_start_matches('/'), MAX_CHECKOUT_BYTES)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|packed| packed);
            match packed {
                Ok(tar) => files = Some(Bytes::from(tar)),
                Err(message) => {
                    return steps
                        .run(step, Duration::from_secs(5), async {
                            Err(StepError::Failed(format!("cannot copy the checkout: {message}")))
                        })
                        .await;
                }
            }
        }
        if kind == JobKind::Verify && !spec.secrets.is_empty() {
            log.system(format!(
                "step {}: secrets withheld from a pull request's step: {}",
                spec.name.as_str(),
                spec.secrets.join(", ")
            ));
        }
        let check = Check {
            project,
            build,
            spec,
            built,
            kind,
            job: steps.job,
            files: files.clone().unwrap_or_default(),
            pod_image: &steps.ctx.probe_image,
        };
        let task = match check.task() {
            Ok(task) => task,
            Err(message) => {
                return steps
                    .run(step, Duration::from_secs(5), async { Err(StepError::Failed(message)) })
                    .await;
            }
        };
        run_one(steps, engine, step, &check, task).await?;
    }
    Ok(())
}

/// One check: its services in a pod with it (if it has any), its container followed to
/// its end, its report read; then every container of it removed.
async fn run_one(
    steps: &Steps<'_>,
    engine: &dyn ContainerEngine,
    step: Step,
    check: &Check<'_>,
    mut task: TaskSpec,
) -> Result<(), JobFailure> {
    let (log, spec) = (steps.log, check.spec);
    // Known by their names from the start: a cancel or timeout can land while the engine
    // is still creating one, and it goes all the same. The pod goes last: the others
    // live in its network namespace.
    let mut names = vec![task.name.clone()];
    names.extend(spec.services.iter().map(|service| check.service_name(service)));
    if !spec.services.is_empty() {
        names.push(check.pod_name());
    }
    let ran = steps
        .run(step, spec.timeout, async {
            if !spec.services.is_empty() {
                let pod = engine.start_pod(&check.pod()).await?;
                task.network = TaskNetwork::Pod(pod);
                for service in &spec.services {
                    engine.start_task(&check.service(service, &task.network)).await?;
                    log.system(format!(
                        "step {}: service {} started ({})",
                        spec.name.as_str(),
                        service.name.as_str(),
                        check.image(&service.image)
                    ));
                }
            }
            let id = engine.start_task(&task).await?;
            let exit_code = engine.follow_task(&id, log).await?;
            let summary = match &spec.junit {
                Some(report) => read_report(engine, &id, report.as_str(), log).await,
                None => None,
            };
            if let Some(summary) = &summary {
                let words = summary.describe();
                log.system(format!("step {}: tests: {words}", spec.name.as_str()));
                let (pool, job) = (&steps.ctx.pool, steps.job.id.get());
                // A deploy's step has secrets, and a test may print one in its message.
                let mask = log.mask();
                let failures: Vec<_> = summary
                    .failures
                    .iter()
                    .cloned()
                    .map(|mut failure| {
                        for text in [
                            &mut failure.suite,
                            &mut failure.name,
                            &mut failure.classname,
                            &mut failure.message,
                        ] {
                            *text = mask.masked(std::mem::take(text));
                        }
                        // A path a secret appears in is not kept at all.
                        failure.file = failure.file.take().filter(|file| mask.apply(file) == file.as_str());
                        failure
                    })
                    .collect();
                if let Err(error) = step_store::set_summary(pool, job, spec.name.as_str(), &words, &failures).await {
                    tracing::warn!(%error, "cannot record a step's test summary");
                }
            }
            match (exit_code, summary) {
                (0, None) => Ok(()),
                (0, Some(summary)) if summary.failed + summary.errored == 0 => Ok(()),
                (code, Some(summary)) => Err(StepError::Failed(format!(
                    "{} (exit code {code}){}",
                    summary.describe(),
                    first_failures(&summary)
                ))),
                (code, None) => Err(StepError::Failed(format!("the commands exited with code {code}"))),
            }
        })
        .await;
    if ran.is_err() {
        // Why a step failed is often in what its services said.
        for service in &spec.services {
            copy_logs(engine, &check.service_name(service), log).await;
        }
    }
    remove_all(engine, &names, log).await;
    if ran.is_err() {
        // A create the engine was still carrying out when the step was stopped lands
        // after the first removal.
        tokio::time::sleep(Duration::from_millis(500)).await;
        remove_all(engine, &names, log).await;
    }
    ran
}

async fn remove_all(engine: &dyn ContainerEngine, names: &[String], log: &JobLog) {
    for name in names {
        if let Err(error) = engine.remove(name).await {
            log.system(format!("could not remove container {name}: {error}"));
        }
    }
}

/// "; failing: name: message; ...", the first three, for the step's one sentence.
fn first_failures(summary: &runfile::junit::TestSummary) -> String {
    let named: Vec<String> = summary
        .failures
        .iter()
        .take(3)
        .map(|failure| {
            let message: String = failure
                .message
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(160)
                .collect();
            format!("{}: {message}", failure.name)
        })
        .collect();
    if named.is_empty() {
        String::new()
    } else {
        format!("; failing: {}", named.join("; "))
    }
}

/// The JUnit report the step names, summarized; what cannot be read is said in the log.
async fn read_report(
    engine: &dyn ContainerEngine,
    container: &str,
    report: &str,
    log: &crate::joblog::JobLog,
) -> Option<runfile::junit::TestSummary> {
    let path = format!("{TASK_CHECKOUT}/{report}");
    match engine.read_file(container, &path, MAX_REPORT_BYTES).await {
        // Up to 16 MiB of XML: parsed off the runtime's threads.
        Ok(Some(xml)) => {
            match tokio::task::spawn_blocking(move || runfile::junit::summarize(&xml).map_err(|e| e.to_string()))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            {
                Ok(summary) => Some(summary),
                Err(error) => {
                    log.system(format!("the JUnit report {report} cannot be read: {error}"));
                    None
                }
            }
        }
        Ok(None) => {
            log.system(format!("the JUnit report {report} was not written (or is too large)"));
            None
        }
        Err(error) => {
            log.system(format!("cannot copy the JUnit report {report}: {error}"));
            None
        }
    }
}

/// One check of one job: what its containers are made of.
struct Check<'a> {
    project: &'a Project,
    build: &'a BuildSettings,
    spec: &'a StepSpec,
    /// The job's image.
    built: &'a str,
    kind: JobKind,
    job: &'a Job,
    /// The checkout, packed for [`TASK_CHECKOUT`].
    files: Bytes,
    pod_image: &'a str,
}

impl Check<'_> {
    /// `runner-<project>-step-<job>-<attempt>-<step>`: what this check's containers are
    /// called, and how they are found again.
    fn base_name(&self) -> String {
        format!(
            "runner-{}-step-{}-{}-{}",
            self.project.name,
            self.job.id,
            self.job.attempts,
            self.spec.name.as_str()
        )
    }

    // A `.` is in no step's name: a step's pod and services never take another's name.
    fn pod_name(&self) -> String {
        format!("{}.pod", self.base_name())
    }

    fn service_name(&self, service: &ServiceSpec) -> String {
        format!("{}.svc.{}", self.base_name(), service.name.as_str())
    }

    fn image(&self, image: &StepImage) -> String {
        match image {
            StepImage::Built => self.built.to_owned(),
            StepImage::Stage(stage) => stage_tag(self.built, stage),
            StepImage::Reference(reference) => reference.to_string(),
        }
    }

    /// A pull request's step may not name the project's own images (its deploys' and what
    /// its registry holds): pulled anew without credentials or not, they are not a
    /// stranger's to run. Its other references are always pulled ([`TaskSpec::pull`]).
    fn allowed(&self, image: &StepImage) -> Result<(), String> {
        let StepImage::Reference(reference) = image else {
            return Ok(());
        };
        if self.kind != JobKind::Verify {
            return Ok(());
        }
        let reference = reference.as_str();
        let repository = reference.split(['@', ':']).next().unwrap_or(reference);
        let registry_host = self
            .project
            .registry
            .as_ref()
            .and_then(|registry| registry.url.as_deref())
            .map(|url| url.split('/').next().unwrap_or(url));
        let own = repository == self.build.image
            || reference.starts_with(&format!("{}:", self.build.image))
            || registry_host.is_some_and(|host| reference.starts_with(&format!("{host}/")))
            || reference.contains(".dkr.ecr.");
        if own {
            return Err(format!(
                "a pull request's step cannot run the project's own images or its registry's ({reference})"
            ));
        }
        Ok(())
    }

    /// Whether a container of `image` pulls it anew (see [`Check::allowed`]).
    fn pulls(&self, image: &StepImage) -> bool {
        self.kind == JobKind::Verify && matches!(image, StepImage::Reference(_))
    }

    /// A pull request's containers live on the closed network, as its smoke test does.
    fn network(&self) -> Network {
        if self.kind == JobKind::Verify {
            Network::Closed
        } else {
            Network::Default
        }
    }

    /// The step's own container.
    fn task(&self) -> Result<TaskSpec, String> {
        let spec = self.spec;
        self.allowed(&spec.image)?;
        for service in &spec.services {
            self.allowed(&service.image)?;
        }
        let mut env: Vec<(String, SecretString)> = vec![
            ("CI".to_owned(), "true".into()),
            ("RUNNER_CHECKOUT".to_owned(), TASK_CHECKOUT.into()),
        ];
        env.extend(
            spec.env
                .iter()
                .map(|(name, value)| (name.clone(), SecretString::from(value.clone()))),
        );
        if self.kind == JobKind::Deploy {
            for name in &spec.secrets {
                let value = self.build.secrets.get(name).ok_or_else(|| {
                    format!("the secret {name} is not offered by the project ([projects.build] secrets)")
                })?;
                env.push((name.clone(), value.clone()));
            }
        }
        Ok(TaskSpec {
            name: self.base_name(),
            image: self.image(&spec.image),
            script: Some(script(&spec.commands, spec.junit.as_ref().map(|r| r.as_str()))),
            env,
            files: self.files.clone(),
            job_id: self.job.id.get(),
            limits: self.project.containers.clone(),
            network: TaskNetwork::Joins(self.network()),
            volumes: spec
                .cache
                .iter()
                .map(|path| (self.cache_volume(path.as_str()), path.as_str().to_owned()))
                .collect(),
            pull: self.pulls(&spec.image),
        })
    }

    /// A volume per project, step and path; a pull request's are its own, so nothing a
    /// stranger leaves in a cache reaches a deploy's step. The parts are hashed together:
    /// no project, step or pull request can spell another's volume.
    fn cache_volume(&self, path: &str) -> String {
        let scope = match (self.kind, self.job.pull_request) {
            (JobKind::Verify, Some(number)) => format!("pr{number}"),
            (JobKind::Verify, None) => format!("job{}", self.job.id),
            _ => "deploy".to_owned(),
        };
        let mut key = sha2::Sha256::new();
        for part in [self.project.name.as_str(), &scope, self.spec.name.as_str(), path] {
            key.update(part.as_bytes());
            key.update([0]);
        }
        let digest = hex::encode(key.finalize());
        format!("runner-cache-{}-{scope}-{}", self.project.name, &digest[..24])
    }

    fn pod(&self) -> PodSpec {
        PodSpec {
            name: self.pod_name(),
            image: self.pod_image.to_owned(),
            job_id: self.job.id.get(),
            network: self.network(),
            hosts: self.spec.services.iter().map(|s| s.name.as_str().to_owned()).collect(),
            lifetime: self.spec.timeout + Duration::from_secs(60),
        }
    }

    fn service(&self, service: &ServiceSpec, network: &TaskNetwork) -> TaskSpec {
        TaskSpec {
            name: self.service_name(service),
            image: self.image(&service.image),
            script: None,
            env: service
                .env
                .iter()
                .map(|(name, value)| (name.clone(), SecretString::from(value.clone())))
                .collect(),
            files: Bytes::new(),
            job_id: self.job.id.get(),
            limits: self.project.containers.clone(),
            network: network.clone(),
            volumes: Vec::new(),
            pull: self.pulls(&service.image),
        }
    }
}

/// The commands as one `sh -e` script, each echoed before it runs; a report file the
/// checkout already holds is removed first, so only what this run writes is read.
fn script(commands: &[String], report: Option<&str>) -> String {
    let mut script = String::new();
    if let Some(report) = report {
        script.push_str(&format!(
            "rm -f {}\n",
            shell_quote(&format!("{TASK_CHECKOUT}/{report}"))
        ));
    }
    for command in commands {
        script.push_str(&format!(
            "printf '%s\\n' {}\n{command}\n",
            shell_quote(&format!("+ {command}"))
        ));
    }
    script
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_settings() -> BuildSettings {
        let toml = "[[projects]]\nname = \"app\"\nrepository = \"o/app\"\ndeploy_branches = [\"main\"]\n\
                    webhook_secret_env = \"S\"\n[projects.build]\nimage = \"app\"\n";
        let env = |name: &str| (name == "S").then(|| "secret".to_owned());
        let config = crate::config::Config::parse(toml, Path::new("runner.toml"), &env).expect("config");
        config.projects[0].build.clone().expect("build settings")
    }

    #[tokio::test]
    async fn a_dockerfile_that_cannot_be_read_is_named_when_a_step_wants_one_of_its_stages() {
        let checkout = tempfile::tempdir().expect("temporary directory");
        let outside = checkout.path().join("elsewhere");
        std::fs::write(&outside, "FROM scratch AS test\n").expect("write");
        std::os::unix::fs::symlink(&outside, checkout.path().join("Dockerfile")).expect("symlink");
        let with_stage = "steps:\n  - name: unit\n    image: target:test\n    commands: [\"true\"]\n";
        std::fs::write(checkout.path().join(FILE), with_stage).expect("write");
        let error = read_file(checkout.path(), &build_settings())
            .await
            .expect_err("the stage cannot be checked");
        assert!(
            error.contains("the Dockerfile is unreadable") && error.contains("not a regular file"),
            "{error}"
        );
        // A file that names no stage does not need the Dockerfile.
        std::fs::write(
            checkout.path().join(FILE),
            "steps:\n  - name: unit\n    commands: [\"true\"]\n",
        )
        .expect("write");
        assert!(read_file(checkout.path(), &build_settings()).await.is_ok());
    }

    #[test]
    fn a_scripts_commands_are_echoed_quoted_before_they_run() {
        let script = script(&["echo 'it''s' && false".to_owned(), "cargo test".to_owned()], None);
        assert_eq!(
            script,
            "printf '%s\\n' '+ echo '\\''it'\\'''\\''s'\\'' && false'\necho 'it''s' && false\n\
             printf '%s\\n' '+ cargo test'\ncargo test\n"
        );
    }
}
