//! What a job will do, decided once before it starts: its steps in order, each with the
//! settings it needs. A plan that cannot be made (a deploy without a registry, a verify
//! job without a smoke test) is an error before anything runs, and the steps never look
//! for a setting that might be missing.

use crate::config::{
    BuildSettings, Environment, PreviewSettings, Project, RegistrySettings, SmokeSettings, Target, TerraformSettings,
};
use crate::job::{JobKind, Trigger};

/// A step of a job; its name is its row's and its status context's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Checkout,
    Build,
    /// Reading the repository's `.runner.yml` (a row only when the file is bad).
    Pipeline,
    /// One of the repository's own steps from its `.runner.yml`, by its name there.
    Check(std::sync::Arc<str>),
    Smoke,
    Push,
    Plan,
    Approval,
    Apply,
    Rollout,
    Record,
    /// A pull request's image put live in its preview environment.
    Preview,
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Self::Check(name) => name,
            Self::Checkout => "checkout",
            Self::Build => "build",
            Self::Pipeline => "pipeline",
            Self::Smoke => "smoke",
            Self::Push => "push",
            Self::Plan => "plan",
            Self::Approval => "approval",
            Self::Apply => "apply",
            Self::Rollout => "rollout",
            Self::Record => "record",
            Self::Preview => "preview",
        }
    }
}

impl Step {
    /// The names the runner's own steps take; a repository's steps must use others.
    pub const BUILT_IN: [&'static str; 11] = crate::runfile::RESERVED_STEP_NAMES;

    /// How the step's duration is labelled in the metrics: a repository's steps share one
    /// label, so a repository cannot add label values.
    pub fn metric_label(&self) -> &str {
        match self {
            Self::Check(_) => "check",
            other => other.name(),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A job's work and the settings it runs with.
#[derive(Debug, Clone, Copy)]
pub enum JobPlan<'a> {
    /// A pull request's commit: built and smoke-tested apart, planned if the project
    /// plans pull requests; never pushed or deployed.
    Verify(Verify<'a>),
    /// A pushed commit: built, smoke-tested, pushed, then delivered.
    Deploy(Deploy<'a>),
    /// An image already pushed (a rollback or a promotion), delivered again.
    Redeliver(Delivery<'a>),
}

#[derive(Debug, Clone, Copy)]
pub struct Verify<'a> {
    pub build: &'a BuildSettings,
    pub smoke: &'a SmokeSettings,
    /// Set when the project plans pull requests.
    pub terraform: Option<&'a TerraformSettings>,
    /// Set when the project has previews: the verified image is pushed and served as the
    /// pull request's preview.
    pub preview: Option<PreviewDelivery<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct PreviewDelivery<'a> {
    pub settings: &'a PreviewSettings,
    pub registry: &'a RegistrySettings,
}

#[derive(Debug, Clone, Copy)]
pub struct Deploy<'a> {
    pub build: &'a BuildSettings,
    pub smoke: &'a SmokeSettings,
    pub registry: &'a RegistrySettings,
    pub delivery: Delivery<'a>,
}

/// Terraform (if the project has it), then the rollout to the environment's target.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub target: &'a Target,
    pub terraform: Option<&'a TerraformSettings>,
}

/// The settings a project lacks for a kind of job, each named as the config names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("project {project} cannot {what} yet: configure {} in its [[projects]] entry", missing.join(", "))]
pub struct MissingSettings {
    pub project: String,
    pub what: &'static str,
    pub missing: Vec<&'static str>,
}

impl<'a> JobPlan<'a> {
    pub fn new(
        project: &'a Project,
        environment: &'a Environment,
        kind: JobKind,
        trigger: Trigger,
    ) -> Result<Self, MissingSettings> {
        let mut needs = Needs::default();
        let plan = match (kind, trigger) {
            (JobKind::Verify, _) => {
                let build = needs.build(project);
                let smoke = needs.smoke(project);
                build.zip(smoke).map(|(build, smoke)| {
                    Self::Verify(Verify {
                        build,
                        smoke,
                        terraform: project.terraform.as_ref().filter(|t| t.plan_pull_requests),
                        preview: project
                            .previews
                            .as_ref()
                            .zip(project.registry.as_ref())
                            .map(|(settings, registry)| PreviewDelivery { settings, registry }),
                    })
                })
            }
            (JobKind::Deploy, Trigger::Rollback | Trigger::Promote) => {
                needs.delivery(project, environment, true).map(Self::Redeliver)
            }
            (JobKind::Deploy, _) => {
                let build = needs.build(project);
                let smoke = needs.smoke(project);
                let registry = needs.get(project.registry.as_ref(), "[projects.registry] (kind, url)");
                let delivery = needs.delivery(project, environment, false);
                match (build, smoke, registry, delivery) {
                    (Some(build), Some(smoke), Some(registry), Some(delivery)) => Some(Self::Deploy(Deploy {
                        build,
                        smoke,
                        registry,
                        delivery,
                    })),
                    _ => None,
                }
            }
        };
        plan.ok_or_else(|| MissingSettings {
            project: project.name.to_string(),
            what: if kind == JobKind::Verify {
                "verify pull requests"
            } else {
                "deploy"
            },
            missing: needs.missing,
        })
    }

    /// The steps, in the order they run.
    pub fn steps(&self) -> Vec<Step> {
        let infra = |terraform: Option<&TerraformSettings>| match terraform {
            Some(t) if t.require_approval => vec![Step::Plan, Step::Approval, Step::Apply],
            Some(_) => vec![Step::Plan, Step::Apply],
            None => vec![],
        };
        let mut steps = Vec::new();
        match self {
            Self::Verify(verify) => {
                steps.extend([Step::Checkout, Step::Build, Step::Smoke]);
                if verify.terraform.is_some() {
                    steps.push(Step::Plan);
                }
                if verify.preview.is_some() {
                    steps.extend([Step::Push, Step::Preview]);
                }
            }
            Self::Redeliver(delivery) => {
                // The module is read from the deployment's commit.
                if delivery.terraform.is_some() {
                    steps.push(Step::Checkout);
                }
                steps.extend(infra(delivery.terraform));
                steps.extend([Step::Rollout, Step::Record]);
            }
            Self::Deploy(deploy) => {
                steps.extend([Step::Checkout, Step::Build, Step::Smoke, Step::Push]);
                steps.extend(infra(deploy.delivery.terraform));
                steps.extend([Step::Rollout, Step::Record]);
            }
        }
        steps
    }
}

/// Collects what a plan lacks, so one error names all of it.
#[derive(Default)]
struct Needs {
    missing: Vec<&'static str>,
}

impl Needs {
    fn get<T>(&mut self, setting: Option<T>, name: &'static str) -> Option<T> {
        if setting.is_none() {
            self.missing.push(name);
        }
        setting
    }

    fn build<'a>(&mut self, project: &'a Project) -> Option<&'a BuildSettings> {
        self.get(project.build.as_ref(), "[projects.build] (image, context, dockerfile)")
    }

    fn smoke<'a>(&mut self, project: &'a Project) -> Option<&'a SmokeSettings> {
        self.get(project.smoke.as_ref(), "[projects.smoke] (container_port, path)")
    }

    /// `alone`: no smoke step runs before (a redelivery); the local target's own probe
    /// then still needs the smoke settings.
    fn delivery<'a>(
        &mut self,
        project: &'a Project,
        environment: &'a Environment,
        alone: bool,
    ) -> Option<Delivery<'a>> {
        let target = self.get(
            environment.target.as_ref(),
            "[projects.rollout] (target, host_port), or the environment's rollout",
        )?;
        if alone && matches!(target, Target::Local(_)) {
            self.get(
                project.smoke.as_ref(),
                "[projects.smoke] (container_port, path): the local target probes it",
            )?;
        }
        Some(Delivery {
            target,
            terraform: project.terraform.as_ref(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn project(sections: &str) -> Project {
        let toml = format!(
            "[[projects]]\nname = \"app\"\nrepository = \"o/app\"\ndeploy_branches = [\"main\"]\nwebhook_secret_env = \"S\"\n{sections}"
        );
        let env = |name: &str| (name == "S").then(|| "secret".to_owned());
        let mut config = Config::parse(&toml, std::path::Path::new("runner.toml"), &env).expect("a valid config");
        config.projects.remove(0)
    }

    const BUILD: &str = "[projects.build]\nimage = \"app\"\n";
    const SMOKE: &str = "[projects.smoke]\ncontainer_port = 8000\n";
    const REGISTRY: &str = "[projects.registry]\nkind = \"v2\"\nurl = \"registry.test\"\n";
    const ROLLOUT: &str = "[projects.rollout]\ntarget = \"local\"\nhost_port = 8080\nslot_ports = [18081, 18082]\n";

    fn names(plan: &JobPlan<'_>) -> Vec<String> {
        plan.steps().iter().map(|step| step.name().to_owned()).collect()
    }

    #[test]
    fn a_deploy_names_every_setting_it_lacks_at_once() {
        let project = project(BUILD);
        let environment = &project.environments[0];
        let missing = JobPlan::new(&project, environment, JobKind::Deploy, Trigger::Push).expect_err("incomplete");
        assert_eq!(missing.what, "deploy");
        assert_eq!(missing.missing.len(), 3, "{missing}");
        let text = missing.to_string();
        for section in ["[projects.smoke]", "[projects.registry]", "[projects.rollout]"] {
            assert!(text.contains(section), "{text}");
        }
        assert!(!text.contains("[projects.build]"), "{text}");
        assert!(text.starts_with("project app cannot deploy yet: configure "), "{text}");
    }

    #[test]
    fn each_kind_of_job_runs_the_steps_its_settings_allow() {
        let project = project(&format!("{BUILD}{SMOKE}{REGISTRY}{ROLLOUT}"));
        let environment = &project.environments[0];
        let deploy = JobPlan::new(&project, environment, JobKind::Deploy, Trigger::Push).expect("a deploy");
        assert_eq!(
            names(&deploy),
            ["checkout", "build", "smoke", "push", "rollout", "record"]
        );
        let verify = JobPlan::new(&project, environment, JobKind::Verify, Trigger::PullRequest).expect("a verify");
        assert_eq!(names(&verify), ["checkout", "build", "smoke"]);
        let rollback = JobPlan::new(&project, environment, JobKind::Deploy, Trigger::Rollback).expect("a rollback");
        assert_eq!(names(&rollback), ["rollout", "record"]);
    }

    #[test]
    fn a_project_with_previews_pushes_and_serves_each_verified_pull_request() {
        let previews = "[projects.previews]\nhost_ports = [20100, 20104]\nslot_ports = [20200, 20209]\n";
        let project = project(&format!("{BUILD}{SMOKE}{REGISTRY}{ROLLOUT}{previews}"));
        let environment = &project.environments[0];
        let verify = JobPlan::new(&project, environment, JobKind::Verify, Trigger::PullRequest).expect("a verify");
        assert_eq!(names(&verify), ["checkout", "build", "smoke", "push", "preview"]);
        let deploy = JobPlan::new(&project, environment, JobKind::Deploy, Trigger::Push).expect("a deploy");
        assert_eq!(
            names(&deploy),
            ["checkout", "build", "smoke", "push", "rollout", "record"]
        );
    }

    #[test]
    fn a_rollback_needs_no_build_but_the_local_target_still_needs_its_probe() {
        let project = project(ROLLOUT);
        let environment = &project.environments[0];
        let missing = JobPlan::new(&project, environment, JobKind::Deploy, Trigger::Rollback).expect_err("no probe");
        assert_eq!(
            missing.missing,
            ["[projects.smoke] (container_port, path): the local target probes it"]
        );
        let project = self::project(&format!("{SMOKE}{ROLLOUT}"));
        let environment = &project.environments[0];
        assert!(JobPlan::new(&project, environment, JobKind::Deploy, Trigger::Promote).is_ok());
        // A verify job never delivers: no registry or target is asked of it.
        let project = self::project(&format!("{BUILD}{SMOKE}"));
        let environment = &project.environments[0];
        assert!(JobPlan::new(&project, environment, JobKind::Verify, Trigger::PullRequest).is_ok());
    }
}
