//! `vul2safe data build`: PrimeVul pairs → teacher reflection → implicit
//! prompts → diff labels → PrimeVul+ JSONL and `stats.json`.
//!
//! Streaming: the main thread reads and pairs rows, `concurrency` workers ask
//! the teacher, and one writer emits records in input order, so memory stays
//! bounded by the pairs in flight whatever the input size.

use super::cache::AnswerCache;
use super::corpus::EMBEDDED_CORPUS;
use super::labels::diff_spans;
use super::pairs::{PairStats, Pairer, RepairPair};
use super::prompts::{leaked_term, signature, template_prompts};
use super::record::{Message, PrimeVulPlus, Reflection, Verdict};
use super::teacher::{PairView, Teacher};
use crate::eval::analyzer::builtin::analyze_text;
use crate::fsutil::{atomic_write, sync_dir};
use crate::lang::Lang;
use anyhow::{Context, Result};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Mutex;
use std::time::Instant;

/// Rounds of asking for prompts again after some leaked security terms.
const PROMPT_ROUNDS: usize = 3;

#[derive(Clone, Debug)]
pub enum Input {
    /// The sample corpus compiled into the binary.
    Embedded,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub inputs: Vec<Input>,
    pub out: PathBuf,
    pub prompts_per_pair: usize,
    /// Minimum teacher confidence to keep a pair.
    pub threshold: f32,
    pub concurrency: usize,
    pub skip_bad: bool,
    /// Share of functions (by name) held out as the test split.
    pub test_fraction: f64,
    /// Also require the built-in analyzer to flag the vulnerable version more
    /// than the fixed one (high and medium findings).
    pub analyzer_check: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BuildStats {
    pub teacher: String,
    pub rows_in: usize,
    pub pairs_in: usize,
    pub kept: usize,
    pub dropped: BTreeMap<String, usize>,
    pub cwe_histogram: BTreeMap<String, usize>,
    pub splits: BTreeMap<String, usize>,
    pub teacher_cache_hits: usize,
    pub seconds: f64,
    pub pairs_per_second: f64,
}

enum Outcome {
    Kept(Box<PrimeVulPlus>, usize),
    Dropped(&'static str, usize),
    Failed(String, String, usize),
}

/// Asks through the cache: a cached answer is returned without asking.
struct Asker<'a> {
    teacher: &'a dyn Teacher,
    cache: Option<&'a AnswerCache>,
}

impl Asker<'_> {
    fn ask<T: Serialize + DeserializeOwned>(&self, key: String, hits: &mut usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(cache) = self.cache else { return f() };
        if let Some(v) = cache.get(&key) {
            if let Ok(t) = serde_json::from_value(v) {
                *hits += 1;
                return Ok(t);
            }
        }
        let t = f()?;
        cache.put(&key, &serde_json::to_value(&t)?)?;
        Ok(t)
    }
}

fn unit_hash(text: &str) -> f64 {
    let d = Sha256::digest(text.as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64
}

/// Collects up to `n` distinct, non-leaking prompts: teacher rounds first,
/// then templates; the exchange goes into the transcript.
fn gather_prompts(asker: &Asker, view: &PairView, n: usize, hits: &mut usize, transcript: &mut Vec<Message>) -> Result<Vec<String>> {
    let mut kept: Vec<String> = Vec::new();
    let mut rejected: Vec<String> = Vec::new();
    let sources = (0..PROMPT_ROUNDS).map(Some).chain([None]);
    for round in sources {
        if kept.len() >= n {
            break;
        }
        let candidates = match round {
            Some(r) => {
                let key = format!("prompts/{}/{}/{n}/{r}", asker.teacher.name(), view.pair.hash);
                let (c, t) = asker.ask(key, hits, || asker.teacher.prompts(view, n, &rejected))?;
                transcript.extend(t);
                c
            }
            None => template_prompts(view.sig, view.lang, &view.pair.project, n),
        };
        for c in candidates {
            if let Some(term) = leaked_term(&c) {
                transcript.push(Message::new("filter", format!("rejected prompt (mentions {term:?}): {c}")));
                rejected.push(c);
            } else if kept.len() < n && !kept.contains(&c) {
                kept.push(c);
            }
        }
        if round.is_some() && !asker.teacher.cacheable() {
            // Template-only teachers give the same answer every round.
            break;
        }
    }
    Ok(kept)
}

fn process(asker: &Asker, opts: &BuildOptions, pair: RepairPair) -> Outcome {
    let mut hits = 0;
    let lang = Lang::detect(pair.file_name.as_deref(), &pair.secure);
    let Some(sig) = signature(&pair.secure, lang).or_else(|| signature(&pair.vulnerable, lang)) else {
        return Outcome::Dropped("no_signature", 0);
    };
    let view = PairView { pair: &pair, lang, sig: &sig };
    let key = format!("reflect/{}/{}", asker.teacher.name(), pair.hash);
    let mut reflection: Reflection = match asker.ask(key, &mut hits, || asker.teacher.reflect(&view)) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(pair.hash.clone(), format!("{e:#}"), hits),
    };
    if reflection.verdict != Verdict::SecurityFix {
        return Outcome::Dropped("not_security_fix", hits);
    }
    if reflection.confidence < opts.threshold {
        return Outcome::Dropped("low_confidence", hits);
    }
    if opts.analyzer_check {
        let count = |code: &str| analyze_text(lang, code, "f").iter().filter(|f| f.severity.is_high_or_medium()).count();
        let (v, f) = (count(&pair.vulnerable), count(&pair.secure));
        reflection
            .transcript
            .push(Message::new("analyzer", format!("builtin: {v} high/medium findings in the vulnerable version, {f} in the fix")));
        if v <= f {
            return Outcome::Dropped("analyzer_disagrees", hits);
        }
    }
    let prompts = match gather_prompts(asker, &view, opts.prompts_per_pair, &mut hits, &mut reflection.transcript) {
        Ok(p) if p.is_empty() => return Outcome::Dropped("prompt_leak", hits),
        Ok(p) => p,
        Err(e) => return Outcome::Failed(pair.hash.clone(), format!("{e:#}"), hits),
    };
    let (vulnerable_spans, secure_spans) = diff_spans(&pair.vulnerable, &pair.secure);
    // Split by function name, so no function is in both splits.
    let split = if unit_hash(&format!("{}:{}", lang.code(), sig.name)) < opts.test_fraction { "test" } else { "train" };
    let record = PrimeVulPlus {
        id: format!("{}-{}-{}", pair.project.to_lowercase(), &pair.commit_id[..pair.commit_id.len().min(10)], &pair.hash[..8]),
        project: pair.project,
        commit_id: pair.commit_id,
        cwe: pair.cwe,
        lang: lang.code().to_string(),
        vulnerable: pair.vulnerable,
        secure: pair.secure,
        vulnerable_spans,
        secure_spans,
        prompts,
        reflection,
        split: split.to_string(),
    };
    Outcome::Kept(Box::new(record), hits)
}

fn open_input(input: &Input) -> Result<(Box<dyn BufRead + Send>, String)> {
    Ok(match input {
        Input::Embedded => (Box::new(Cursor::new(EMBEDDED_CORPUS.as_bytes())), "embedded corpus".to_string()),
        Input::File(p) => {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            (Box::new(BufReader::with_capacity(1 << 20, f)), p.display().to_string())
        }
    })
}

struct Writer {
    records: BufWriter<File>,
    failures: BufWriter<File>,
    stats: BuildStats,
    next: usize,
    pending: BTreeMap<usize, Outcome>,
}

impl Writer {
    fn emit(&mut self, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Kept(r, hits) => {
                self.stats.teacher_cache_hits += hits;
                self.stats.kept += 1;
                for c in &r.cwe {
                    *self.stats.cwe_histogram.entry(c.clone()).or_default() += 1;
                }
                *self.stats.splits.entry(r.split.clone()).or_default() += 1;
                serde_json::to_writer(&mut self.records, &r)?;
                self.records.write_all(b"\n")?;
            }
            Outcome::Dropped(reason, hits) => {
                self.stats.teacher_cache_hits += hits;
                *self.stats.dropped.entry(reason.to_string()).or_default() += 1;
            }
            Outcome::Failed(hash, error, hits) => {
                self.stats.teacher_cache_hits += hits;
                *self.stats.dropped.entry("teacher_error".into()).or_default() += 1;
                serde_json::to_writer(&mut self.failures, &json!({"pair_hash": hash, "error": error}))?;
                self.failures.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Emits results in input order as they arrive.
    fn run(mut self, results: Receiver<(usize, Outcome)>, progress: &(dyn Fn(usize) + Sync)) -> Result<BuildStats> {
        for (i, outcome) in results {
            self.pending.insert(i, outcome);
            while let Some(o) = self.pending.remove(&self.next) {
                self.emit(o)?;
                self.next += 1;
                progress(self.next);
            }
        }
        self.records.flush()?;
        self.failures.flush()?;
        Ok(self.stats)
    }
}

/// Builds PrimeVul+ into `opts.out`; `progress` sees the count of pairs done.
pub fn build(opts: &BuildOptions, teacher: &dyn Teacher, progress: &(dyn Fn(usize) + Sync)) -> Result<BuildStats> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let cache = if teacher.cacheable() { Some(AnswerCache::open(&opts.out.join("teacher_cache.jsonl"))?) } else { None };
    let asker = Asker { teacher, cache: cache.as_ref() };
    let tmp = opts.out.join(".primevul_plus.jsonl.tmp");
    let records = BufWriter::new(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    let failures_path = opts.out.join("failures.jsonl");
    let failures = BufWriter::new(File::create(&failures_path).with_context(|| format!("creating {}", failures_path.display()))?);
    let writer = Writer { records, failures, stats: BuildStats::default(), next: 0, pending: BTreeMap::new() };

    let workers = opts.concurrency.max(1);
    let (job_tx, job_rx) = sync_channel::<(usize, RepairPair)>(workers * 2);
    let (res_tx, res_rx) = sync_channel::<(usize, Outcome)>(workers * 4);
    let job_rx = Mutex::new(job_rx);
    let mut pair_stats = PairStats::default();
    let (read_result, write_result) = std::thread::scope(|s| {
        for _ in 0..workers {
            let (res_tx, job_rx, asker) = (res_tx.clone(), &job_rx, &asker);
            s.spawn(move || loop {
                let job = job_rx.lock().expect("job lock").recv();
                let Ok((i, pair)) = job else { break };
                if res_tx.send((i, process(asker, opts, pair))).is_err() {
                    break;
                }
            });
        }
        drop(res_tx);
        let writer = s.spawn(move || writer.run(res_rx, progress));
        let read = (|| -> Result<()> {
            let mut seen = HashSet::new();
            let mut index = 0;
            for input in &opts.inputs {
                let (reader, name) = open_input(input)?;
                let mut pairer = Pairer::new(reader, &name, opts.skip_bad);
                while let Some(pair) = pairer.next_pair(&mut pair_stats)? {
                    if !seen.insert(pair.hash.clone()) {
                        pair_stats.drop("duplicate_pair", 1);
                        continue;
                    }
                    if job_tx.send((index, pair)).is_err() {
                        break;
                    }
                    index += 1;
                }
            }
            Ok(())
        })();
        drop(job_tx);
        (read, writer.join().expect("writer thread"))
    });
    read_result?;
    let mut stats = write_result?;

    stats.teacher = teacher.name();
    stats.rows_in = pair_stats.rows_in;
    stats.pairs_in = pair_stats.pairs_in;
    for (reason, n) in pair_stats.dropped {
        *stats.dropped.entry(reason).or_default() += n;
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    stats.pairs_per_second = stats.pairs_in as f64 / stats.seconds.max(1e-9);
    File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("fsync {}", tmp.display()))?;
    std::fs::rename(&tmp, opts.out.join("primevul_plus.jsonl")).context("publishing primevul_plus.jsonl")?;
    sync_dir(&opts.out)?;
    atomic_write(&opts.out.join("stats.json"), serde_json::to_string_pretty(&stats)?.as_bytes())?;
    Ok(stats)
}

/// Reads a PrimeVul+ file back (for the trainers and tests).
pub fn read_records(path: &Path) -> Result<Vec<PrimeVulPlus>> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    BufReader::new(f)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.as_ref().map_or(true, |l| !l.trim().is_empty()))
        .map(|(i, l)| {
            let l = l.with_context(|| format!("{}: line {}", path.display(), i + 1))?;
            serde_json::from_str(&l).with_context(|| format!("{}: line {}: not a PrimeVul+ record", path.display(), i + 1))
        })
        .collect()
}
