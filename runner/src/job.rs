//! The vocabulary of jobs: what kind, why it exists, and where it is in its life.

use serde::Serialize;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        // Stored as the same text, which the tables' CHECK constraints list.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl sqlx::Type<sqlx::Any> for $name {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <str as sqlx::Type<sqlx::Any>>::type_info()
            }
            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                let text: &'q str = self.as_str();
                <&'q str as sqlx::Encode<'q, sqlx::Any>>::encode_by_ref(&text, buf)
            }
        }

        // Read back through `parse`: a value the database holds that this runner does not
        // know is an error, not a silently wrong state.
        impl<'r> sqlx::Decode<'r, sqlx::Any> for $name {
            fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <String as sqlx::Decode<'r, sqlx::Any>>::decode(value)?;
                Self::parse(&text).ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// A deploy puts a commit live; a verify only proves a pull request would build.
    JobKind { Deploy => "deploy", Verify => "verify" }
);

text_enum!(
    /// Why a job was queued.
    Trigger {
        Push => "push",
        PullRequest => "pull_request",
        Redeploy => "redeploy",
        Rollback => "rollback",
        Reconcile => "reconcile",
        Replay => "replay",
        Promote => "promote",
    }
);

text_enum!(
    /// `queued → running → (awaiting_approval → running) → succeeded | failed | cancelled`,
    /// or `queued → superseded` when a newer deploy for the same environment arrives first.
    JobState {
        Queued => "queued",
        Running => "running",
        AwaitingApproval => "awaiting_approval",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        Superseded => "superseded",
    }
);

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Superseded
        )
    }
}

text_enum!(
    /// `pending → running → succeeded | failed | cancelled`, or `skipped` when the job
    /// ended (or needed nothing of the step) before it.
    StepState {
        Pending => "pending",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// `in_progress → live → replaced`, or `in_progress → failed | rolled_back | cancelled`.
    DeploymentStatus {
        InProgress => "in_progress",
        Live => "live",
        Replaced => "replaced",
        Failed => "failed",
        RolledBack => "rolled_back",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// A pull request's preview: `deploying → live → removing → removed` (or `deploying →
    /// removing` when it never served). A new push keeps it `live` while it deploys.
    PreviewState {
        Deploying => "deploying",
        Live => "live",
        Removing => "removing",
        Removed => "removed",
    }
);

text_enum!(
    /// Why a preview was removed.
    Removal {
        Closed => "closed",
        Merged => "merged",
        Expired => "expired",
        Evicted => "evicted",
        Removed => "removed",
        Failed => "failed",
    }
);

impl Removal {
    /// Why, in words a pull request's comment can say.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Closed => "the pull request was closed",
            Self::Merged => "the pull request was merged",
            Self::Expired => "it had no push for longer than the previews' ttl_hours",
            Self::Evicted => "a newer pull request's preview needed its place (max_previews)",
            Self::Removed => "an admin removed it",
            Self::Failed => "its deploy failed before it ever served",
        }
    }
}
