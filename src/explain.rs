//! Why a request is decided as it is: the [`Trace`] that [`crate::policy::decide_traced`] and
//! [`crate::iam::Grants::evaluate_traced`] report each step and each rule to, and the
//! [`Recorder`] that turns those reports into the lines `keyward explain` prints.
//!
//! There is one decision function. Check passes [`NoTrace`], whose methods are empty and
//! inlined away (the decision is generic over the trace, so Check's copy has no calls, no
//! allocation and no branch for it); `keyward explain` passes a [`Recorder`] to the very same
//! function, so its answer cannot drift from Check's.

use crate::condition::Facts;
use crate::iam::{Action, GrantRule};
use crate::model::{KeyScope, Plane};
use crate::policy::{Target, target_name};

/// A step of the decision, reported as it is taken.
#[derive(Debug, Clone, Copy)]
pub enum Step<'a> {
    /// The key is neither revoked nor expired at the decision's instant.
    KeyValid,
    /// The key's plane against the route's.
    Plane { key: Plane, route: Plane },
    /// Whether the key's own scope covers the target.
    Scope {
        scope: &'a KeyScope,
        target: Target<'a>,
        covers: bool,
    },
    /// Whether the data route's deployment is registered.
    DeploymentKnown { name: &'a str, known: bool },
    /// The action the route asks for, and where.
    Action { action: Action, project: &'a str },
    /// The key's bearer is the organization's owner: no policy is consulted.
    Owner,
    /// The deployment's public endpoint is removed: the public listener answers 404 before
    /// any credential is read.
    PublicEndpointRemoved,
}

/// What one rule of the bearer's policies did for the action asked.
#[derive(Debug, Clone, Copy)]
pub enum RuleVerdict<'a> {
    /// The rule's scope does not cover the place (another project, or the organization).
    OutOfScope,
    /// The rule covers the place but none of its permission sets holds the action.
    ActionNotHeld,
    /// The rule would grant the action, but these condition kinds failed.
    ConditionsFailed(&'a [&'static str]),
    /// The rule grants the action; later rules are not considered.
    Granted,
}

/// Receives the decision's steps. Every method has an empty default.
pub trait Trace {
    #[inline(always)]
    fn step(&mut self, _step: Step<'_>) {}
    #[inline(always)]
    fn rule(&mut self, _rule: &GrantRule, _verdict: RuleVerdict<'_>) {}
}

/// The Check path's trace: records nothing, costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrace;

impl Trace for NoTrace {}

/// Records the decision as lines a person reads, with what each failed condition saw.
#[derive(Debug)]
pub struct Recorder<'f> {
    facts: Facts<'f>,
    pub lines: Vec<String>,
}

impl<'f> Recorder<'f> {
    pub fn new(facts: Facts<'f>) -> Self {
        Recorder {
            facts,
            lines: Vec::new(),
        }
    }

    pub fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "ok  " } else { "FAIL" }
}

impl Trace for Recorder<'_> {
    fn step(&mut self, step: Step<'_>) {
        let line = match step {
            Step::KeyValid => format!("{} key: not revoked, not expired", yes(true)),
            Step::Plane { key, route } => format!(
                "{} plane: the key is a {} key, the route is a {} route",
                yes(key == route),
                key.as_str(),
                route.as_str()
            ),
            Step::Scope {
                scope,
                target,
                covers,
            } => format!(
                "{} key scope {} {} {}",
                yes(covers),
                scope.to_strings().join(","),
                if covers { "covers" } else { "does not cover" },
                target_name(&target)
            ),
            Step::DeploymentKnown { name, known } => format!(
                "{} deployment {name} {}",
                yes(known),
                if known {
                    "is registered"
                } else {
                    "is not registered"
                }
            ),
            Step::Action { action, project } => {
                format!("     action: {action} on project {project}")
            }
            Step::Owner => format!(
                "{} bearer is the organization's owner: every action is granted, no policy or condition applies",
                yes(true)
            ),
            Step::PublicEndpointRemoved => format!(
                "{} public endpoint: removed (private only); the public listener answers 404 as for a deployment that is not there, before reading any key",
                yes(false)
            ),
        };
        self.lines.push(line);
    }

    fn rule(&mut self, rule: &GrantRule, verdict: RuleVerdict<'_>) {
        let head = format!("policy {}: rule {}", rule.policy, rule.describe());
        match verdict {
            RuleVerdict::OutOfScope => self.lines.push(format!(
                "     {head}: skipped, its scope does not cover this place"
            )),
            RuleVerdict::ActionNotHeld => self.lines.push(format!(
                "     {head}: skipped, its permission sets do not hold the action"
            )),
            RuleVerdict::Granted => self.lines.push(format!(
                "{} {head}: grants the action, its conditions hold",
                yes(true)
            )),
            RuleVerdict::ConditionsFailed(kinds) => {
                self.lines.push(format!(
                    "{} {head}: would grant the action, but conditions failed: {}",
                    yes(false),
                    kinds.join(", ")
                ));
                for kind in kinds {
                    let why = rule.conditions.explain_failure(kind, &self.facts);
                    self.lines.push(format!("       - {why}"));
                }
            }
        }
    }
}
