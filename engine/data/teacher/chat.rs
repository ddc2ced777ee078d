//! A teacher that talks: the reflection and prompt-writing conversations, the
//! parsing of their JSON answers, and retries with exponential backoff around
//! any chat backend (an HTTP endpoint or our own engine).

use super::{PairView, Teacher};
use crate::data::record::{Message, Reflection, Verdict};
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::time::Duration;

/// One chat completion: messages in, the assistant's text out.
pub trait ChatBackend: Send + Sync {
    fn name(&self) -> String;
    fn complete(&self, messages: &[Message]) -> Result<String, ChatError>;
}

/// A failure worth retrying (timeouts, 5xx, 429, garbage) or not (bad key, 404).
#[derive(Debug)]
pub enum ChatError {
    Transient(anyhow::Error),
    Fatal(anyhow::Error),
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 4, first_backoff: Duration::from_millis(500) }
    }
}

pub struct ChatTeacher<C: ChatBackend> {
    pub backend: C,
    pub retry: RetryPolicy,
}

const SYSTEM: &str = "You are a senior security engineer reviewing vulnerability fixes. Answer with one JSON object and nothing else.";

fn numbered(code: &str) -> String {
    code.lines().enumerate().map(|(i, l)| format!("{:4} | {l}", i + 1)).collect::<Vec<_>>().join("\n")
}

fn reflection_request(v: &PairView) -> Vec<Message> {
    let p = v.pair;
    let cwe = if p.cwe.is_empty() { "not stated".to_string() } else { p.cwe.join(", ") };
    let user = format!(
        "Project: {}\nCommit message: {}\nStated weakness: {cwe}\nLanguage: {}\n\nVULNERABLE version (numbered):\n{}\n\nFIXED version:\n{}\n\n\
         Reflect on this change. Does the fix repair the stated weakness (a real security repair, not a refactor)? \
         Which lines of the vulnerable version form the vulnerable sequence? Which tokens or short snippets of the fix make it secure? \
         Reply as JSON: {{\"verdict\": \"security_fix\" | \"not_security\" | \"unsure\", \"confidence\": 0.0-1.0, \
         \"vulnerable_lines\": [line numbers], \"secure_tokens\": [snippets], \"rationale\": \"one sentence\"}}",
        p.project,
        p.message.as_deref().unwrap_or("(none)"),
        v.lang.display(),
        numbered(&p.vulnerable),
        p.secure,
    );
    vec![Message::new("system", SYSTEM), Message::new("user", user)]
}

fn prompts_request(v: &PairView, n: usize, rejected: &[String]) -> Vec<Message> {
    let mut user = format!(
        "Here is a {} function from {}:\n\n{}\n\nWrite {n} different task descriptions a developer could give to have this function written: \
         its purpose, its signature `{}`, and the context it runs in. Never mention security, vulnerabilities, overflows, sanitizing, \
         CWEs or attacks: describe only what the function must do. Reply as JSON: {{\"prompts\": [\"...\"]}}",
        v.lang.display(),
        v.pair.project,
        v.pair.secure,
        v.sig.decl
    );
    if !rejected.is_empty() {
        user.push_str(&format!(
            "\n\nThese earlier descriptions were rejected for naming security topics; do not repeat them: {rejected:?}"
        ));
    }
    vec![Message::new("system", SYSTEM), Message::new("user", user)]
}

/// The outermost `{ ... }` of a reply (models like to add prose or fences).
fn json_object<T: for<'de> Deserialize<'de>>(reply: &str) -> Result<T> {
    let (Some(start), Some(end)) = (reply.find('{'), reply.rfind('}')) else {
        bail!("no JSON object in the reply");
    };
    if end < start {
        bail!("malformed JSON object in the reply");
    }
    serde_json::from_str(&reply[start..=end]).context("the reply's JSON does not have the requested fields")
}

#[derive(Deserialize)]
struct ReflectionAnswer {
    verdict: Verdict,
    confidence: f32,
    #[serde(default)]
    vulnerable_lines: Vec<usize>,
    #[serde(default)]
    secure_tokens: Vec<String>,
}

#[derive(Deserialize)]
struct PromptsAnswer {
    prompts: Vec<String>,
}

impl<C: ChatBackend> ChatTeacher<C> {
    /// Asks until an answer parses, backing off between attempts; transport
    /// and parse failures are retried, fatal HTTP errors are not.
    fn ask<T>(&self, messages: Vec<Message>, parse: impl Fn(&str) -> Result<T>) -> Result<(T, Vec<Message>)> {
        let mut transcript = messages.clone();
        let mut wait = self.retry.first_backoff;
        let mut last = anyhow!("no attempt made");
        for attempt in 1..=self.retry.attempts {
            match self.backend.complete(&messages) {
                Ok(reply) => {
                    transcript.push(Message::new("assistant", reply.clone()));
                    match parse(&reply) {
                        Ok(v) => return Ok((v, transcript)),
                        Err(e) => last = e.context(format!("attempt {attempt}: unusable answer")),
                    }
                }
                Err(ChatError::Fatal(e)) => return Err(e),
                Err(ChatError::Transient(e)) => last = e.context(format!("attempt {attempt}")),
            }
            if attempt < self.retry.attempts {
                std::thread::sleep(wait);
                wait *= 2;
            }
        }
        Err(last.context(format!("teacher {} failed after {} attempts", self.backend.name(), self.retry.attempts)))
    }
}

impl<C: ChatBackend> Teacher for ChatTeacher<C> {
    fn name(&self) -> String {
        self.backend.name()
    }

    fn cacheable(&self) -> bool {
        true
    }

    fn reflect(&self, v: &PairView) -> Result<Reflection> {
        let (a, transcript) = self.ask(reflection_request(v), |r| {
            let a: ReflectionAnswer = json_object(r)?;
            if !(0.0..=1.0).contains(&a.confidence) {
                bail!("confidence {} outside [0, 1]", a.confidence);
            }
            Ok(a)
        })?;
        Ok(Reflection {
            teacher: self.name(),
            verdict: a.verdict,
            confidence: a.confidence,
            vulnerable_lines: a.vulnerable_lines,
            secure_tokens: a.secure_tokens,
            transcript,
        })
    }

    fn prompts(&self, v: &PairView, n: usize, rejected: &[String]) -> Result<(Vec<String>, Vec<Message>)> {
        let (a, transcript) = self.ask(prompts_request(v, n, rejected), |r| {
            let a: PromptsAnswer = json_object(r)?;
            Ok(a.prompts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect::<Vec<_>>())
        })?;
        Ok((a, transcript))
    }
}
