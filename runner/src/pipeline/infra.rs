//! The terraform steps of a job: plan (its summary and text kept on the job), approval
//! when the project asks for it, apply of exactly the saved plan, and the outputs.
//!
//! A pull request's plan runs someone else's module: it gets the project's pull request
//! environment (read-only credentials), never the deploy environment or secret
//! variables, and plans with `-lock=false` so it cannot hold the production state lock.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;

use super::plan::Step;
use super::steps::Steps;
use super::{JobFailure, StepError};
use crate::adapters::sandbox::Sandbox;
use crate::adapters::terraform::{Module, PlanSummary, TerraformError};
use crate::config::{Project, TerraformSettings};
use crate::job::StepState;
use crate::store::artifacts;
use crate::store::jobs::approval::{self, Waiting};

/// A stale plan (the state changed between plan and apply) is planned again, and
/// approved again, at most this many times.
const MAX_PLANS: usize = 3;

/// What the terraform steps leave for the rollout.
pub struct Applied {
    /// `None` when the job only planned (a verify job).
    pub outputs: Option<Value>,
}

/// Plans with `image` as the image variable; for a deploy, then waits for approval if
/// needed, applies the plan and reads the outputs.
pub(super) async fn run(
    steps: &Steps<'_>,
    project: &Project,
    settings: &TerraformSettings,
    dirs: &super::JobDirs,
    image: &str,
    plan_only: bool,
) -> Result<Applied, JobFailure> {
    let checkout = dirs.checkout.as_path();
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    let Some(bin) = ctx.terraform_bin.clone() else {
        return Err(JobFailure::NotConfigured(
            "no terraform executable: install Terraform or set TERRAFORM_BIN, and restart the runner".into(),
        ));
    };
    let (mut vars, env) = if plan_only {
        log.system("pull request plan: with the pull request environment, no secret variables, -lock=false");
        (
            settings.vars.clone(),
            with_secrets(&settings.pull_request_env, &settings.pull_request_secret_env),
        )
    } else {
        (
            with_secrets(&settings.vars, &settings.secret_vars),
            with_secrets(&settings.env, &settings.secret_env),
        )
    };
    vars.insert(settings.image_var.clone(), image.to_owned());
    let module_dir = checkout.join(&settings.dir);
    let sandbox = if plan_only || settings.sandbox {
        let sandbox =
            sandbox_for(ctx, settings, dirs, &bin, &module_dir, plan_only).map_err(|message| JobFailure::Step {
                step: Step::Plan,
                error: StepError::Failed(message),
            })?;
        log.system(format!(
            "terraform runs in a sandbox ({}, network: {})",
            if plan_only {
                "untrusted: an unprivileged user, the checkout and its own home only"
            } else {
                "the checkout, its own home, the provider cache and the state directory only"
            },
            match sandbox.network {
                crate::config::SandboxNetwork::Host => "the host's",
                crate::config::SandboxNetwork::None => "none",
                crate::config::SandboxNetwork::Egress => "outbound only",
            }
        ));
        Some(sandbox)
    } else {
        None
    };
    let module = Module {
        bin,
        dir: checkout.join(&settings.dir),
        home: dirs.home.clone(),
        vars,
        backend_config: if plan_only {
            // Terraform keeps -backend-config values in the module's .terraform, where a
            // pull request's code reads them: it gets none that reads like a credential.
            settings
                .backend_config
                .iter()
                .filter(|(key, _)| !crate::config::is_credential_key(key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        } else {
            settings.backend_config.clone()
        },
        env,
        workspace: settings.workspace.clone(),
        lock_timeout: settings.lock_timeout,
        lock_state: !plan_only,
        sandbox,
        plugin_cache: Some(plugin_cache(ctx)),
        runner_dir: Some(dirs.root.clone()),
    };
    if let Err(message) = crate::adapters::context::inside(checkout, &module_dir) {
        return Err(JobFailure::Step {
            step: Step::Plan,
            error: StepError::Failed(format!("terraform.dir {:?} at {}: {message}", settings.dir, job.sha)),
        });
    }
    if !module_dir.is_dir() {
        return Err(JobFailure::Step {
            step: Step::Plan,
            error: StepError::Failed(format!(
                "the repository has no directory {:?} at {}",
                settings.dir, job.sha
            )),
        });
    }
    if let Some(sandbox) = &module.sandbox
        && let Err(error) = sandbox.hand_over(&[&module_dir, &dirs.home])
    {
        return Err(JobFailure::Step {
            step: Step::Plan,
            error: StepError::Failed(format!("handing the module directory to the sandbox's user: {error}")),
        });
    }
    let module = ctx.connector.terraform(module);
    let plan_file = dirs.home.join(format!("job-{}.tfplan", job.id));
    // One terraform operation per state at a time within this runner, and across replicas
    // (an advisory lock on PostgreSQL); Terraform's own lock (with -lock-timeout) guards
    // against everyone else.
    let state_key = format!("{}/{}", project.name, settings.workspace);
    let state_lock = ctx.terraform_lock(&state_key).await;
    let mut prepared = false;

    for attempt in 1..=MAX_PLANS {
        let summary = steps
            .run(Step::Plan, settings.timeout, async {
                // A pull request's plan takes no lock, so it waits for none either.
                let _held = if plan_only {
                    None
                } else {
                    Some(hold_state(ctx, &state_lock, &state_key).await?)
                };
                if !prepared {
                    module.prepare(log, steps.cancel).await?;
                }
                let (summary, text) = module.plan(&plan_file, log, steps.cancel).await?;
                keep_plan(steps, &summary, &text).await;
                Ok(summary)
            })
            .await?;
        prepared = true;
        log.system(format!("plan: {}", summary.headline()));
        for change in &summary.resources {
            log.system(format!("  {} {}", change.actions.join("/"), change.address));
        }
        if plan_only {
            return Ok(Applied { outputs: None });
        }
        if !summary.has_changes() {
            log.system("no changes: nothing to approve or apply");
            for step in [Step::Approval, Step::Apply] {
                steps.set_state(step.name(), StepState::Skipped, None).await;
            }
            break;
        }
        if settings.require_approval {
            steps
                .run(Step::Approval, ctx.approval_timeout, wait_for_approval(steps, &summary))
                .await?;
        }
        let applied = steps
            .run(Step::Apply, settings.timeout, async {
                let _held = hold_state(ctx, &state_lock, &state_key).await?;
                match module.apply(&plan_file, log, steps.cancel).await {
                    Ok(()) => Ok(true),
                    Err(TerraformError::StalePlan) if attempt < MAX_PLANS => Ok(false),
                    Err(error) => Err(error.into()),
                }
            })
            .await?;
        if applied {
            break;
        }
        log.system("the saved plan is stale (the state changed since it was made): planning again");
        for step in [Step::Plan, Step::Approval, Step::Apply] {
            steps.set_state(step.name(), StepState::Pending, None).await;
        }
    }
    let outputs = module.outputs(log, steps.cancel).await.map_err(|e| JobFailure::Step {
        step: Step::Apply,
        error: StepError::Failed(format!("reading the outputs: {e}")),
    })?;
    Ok(Applied { outputs: Some(outputs) })
}

/// The provider plugin cache: trusted runs fill it, untrusted ones read it. It holds
/// providers from public registries only, so it is readable by the sandbox's user. It
/// sits beside the work directory (`work` → `work-terraform-plugins`), which start-up
/// empties.
fn plugin_cache(ctx: &super::PipelineContext) -> std::path::PathBuf {
    let name = ctx
        .work_root
        .file_name()
        .map_or_else(|| "work".into(), |name| name.to_string_lossy().into_owned());
    ctx.work_root.with_file_name(format!("{name}-terraform-plugins"))
}

/// The sandbox of one job's terraform commands: the checkout and the job's home, the
/// directory of the terraform executable, the provider cache and a local state's directory
/// (writable for a deploy; for a pull request's plan, the cache and the state file
/// read-only, and the network as the project says).
fn sandbox_for(
    ctx: &super::PipelineContext,
    settings: &TerraformSettings,
    dirs: &super::JobDirs,
    bin: &std::path::Path,
    module_dir: &std::path::Path,
    untrusted: bool,
) -> Result<Sandbox, String> {
    use std::os::unix::fs::DirBuilderExt as _;
    let network = if untrusted {
        settings.pull_request_network
    } else {
        crate::config::SandboxNetwork::Host
    };
    let (bwrap, setpriv) = crate::adapters::sandbox::tools(network, untrusted).map_err(|e| e.to_string())?;
    let cache = plugin_cache(ctx);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&cache)
        .map_err(|e| format!("creating the provider cache {}: {e}", cache.display()))?;
    let bin_dir = std::fs::canonicalize(bin)
        .ok()
        .and_then(|real| real.parent().map(std::path::Path::to_path_buf))
        .ok_or_else(|| format!("cannot resolve the terraform executable {}", bin.display()))?;
    let mut read_only = vec![bin_dir];
    let mut writable = vec![dirs.checkout.clone(), dirs.home.clone()];
    // The local backend's state file, named by the runner's config.
    let state = settings
        .backend_config
        .get("path")
        .map(std::path::PathBuf::from)
        .filter(|path| path.is_absolute());
    if untrusted {
        read_only.push(dirs.root.join(crate::adapters::terraform::CLI_CONFIG));
        read_only.push(cache);
        read_only.extend(state.filter(|path| path.is_file()));
    } else {
        writable.push(cache);
        if let Some(dir) = state.as_deref().and_then(std::path::Path::parent) {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating the state directory {}: {e}", dir.display()))?;
            writable.push(dir.to_owned());
        }
    }
    Ok(Sandbox {
        bwrap,
        setpriv,
        network,
        untrusted,
        user: crate::adapters::sandbox::NOBODY,
        blocked_networks: settings.pull_request_blocked_networks.clone(),
        read_only,
        writable,
        chdir: module_dir.to_owned(),
    })
}

/// Plain values and secret ones, as the terraform command takes them.
fn with_secrets(
    plain: &BTreeMap<String, String>,
    secret: &BTreeMap<String, secrecy::SecretString>,
) -> BTreeMap<String, String> {
    let mut all = plain.clone();
    all.extend(secret.iter().map(|(k, v)| (k.clone(), v.expose_secret().to_owned())));
    all
}

/// The summary goes on the job, the readable plan (secrets masked) into its artifacts.
async fn keep_plan(steps: &Steps<'_>, summary: &PlanSummary, text: &str) {
    let (ctx, job) = (steps.ctx, steps.job);
    let mut summary_json = serde_json::to_value(summary).unwrap_or_default();
    summary_json["headline"] = Value::String(summary.headline());
    if let Err(error) = approval::record_plan(&ctx.pool, job.id, &summary_json.to_string(), ctx.clock.now_ms()).await {
        steps.log.system(format!("could not record the plan summary: {error}"));
    }
    let masked: String = text
        .lines()
        .map(|line| steps.log.mask().apply(line))
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(error) = artifacts::put(
        &ctx.pool,
        job.id.get(),
        "plan.txt",
        "text/plain",
        &masked,
        ctx.clock.now_ms(),
    )
    .await
    {
        steps.log.system(format!("could not keep the plan text: {error}"));
    }
}

/// Holds the job in `awaiting_approval` until a person approves or rejects the plan.
async fn wait_for_approval(steps: &Steps<'_>, summary: &PlanSummary) -> Result<(), StepError> {
    let (ctx, job, log) = (steps.ctx, steps.job, steps.log);
    if !approval::request(&ctx.pool, job.id, &ctx.owner, ctx.clock.now_ms()).await? {
        return Err("the job is no longer held by this worker".into());
    }
    ctx.log_events.stored(job.id);
    log.system(format!(
        "waiting for approval of the plan ({}): POST /api/jobs/{}/approve or /reject, or the dashboard",
        summary.headline(),
        job.id
    ));
    loop {
        match approval::poll(&ctx.pool, job.id, &ctx.owner).await? {
            Waiting::Pending => tokio::time::sleep(Duration::from_millis(300)).await,
            Waiting::Approved => {
                approval::resume(&ctx.pool, job.id, &ctx.owner, ctx.clock.now_ms()).await?;
                ctx.log_events.stored(job.id);
                log.system("plan approved");
                return Ok(());
            }
            Waiting::Rejected => {
                approval::resume(&ctx.pool, job.id, &ctx.owner, ctx.clock.now_ms()).await?;
                return Err("the plan was rejected; nothing was applied".into());
            }
            Waiting::Gone => return Err("the job was cancelled while it waited for approval".into()),
        }
    }
}

/// Holds the terraform state of `key` for one operation: this runner's own lock first (its
/// jobs queue in order), then the replicas' lock in the database.
async fn hold_state<'l>(
    ctx: &super::PipelineContext,
    local: &'l tokio::sync::Mutex<()>,
    key: &str,
) -> Result<(tokio::sync::MutexGuard<'l, ()>, crate::store::locks::HeldLock), StepError> {
    let local = local.lock().await;
    let shared = ctx
        .pool
        .lock(crate::store::locks::LockKind::Terraform, key)
        .await
        .map_err(|e| format!("cannot take the terraform state lock of {key}: {e}"))?;
    Ok((local, shared))
}
