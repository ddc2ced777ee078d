//! A crash-safe cache of teacher answers: an append-only JSONL file, one
//! `{"key", "value"}` per line, fsynced per answer. A rerun after a crash
//! loads it and asks nothing that was already answered; a line torn by the
//! crash is ignored.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct AnswerCache {
    path: PathBuf,
    entries: Mutex<HashMap<String, Value>>,
    file: Mutex<File>,
    /// Lines that did not parse when loading (a torn tail after a crash).
    pub torn_lines: usize,
}

impl AnswerCache {
    pub fn open(path: &Path) -> Result<AnswerCache> {
        let mut entries = HashMap::new();
        let mut torn_lines = 0;
        if path.exists() {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            for line in BufReader::new(f).split(b'\n') {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                match serde_json::from_slice::<Value>(&line) {
                    Ok(v) if v["key"].is_string() => {
                        entries.insert(v["key"].as_str().unwrap_or_default().to_string(), v["value"].clone());
                    }
                    _ if line.iter().all(u8::is_ascii_whitespace) => {}
                    _ => torn_lines += 1,
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        // A torn tail has no newline; start the next entry on a fresh line.
        if torn_lines > 0 {
            writeln!(&file).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(AnswerCache { path: path.to_path_buf(), entries: Mutex::new(entries), file: Mutex::new(file), torn_lines })
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &str) -> Option<Value> {
        self.entries.lock().expect("cache lock").get(key).cloned()
    }

    /// Stores an answer durably before returning.
    pub fn put(&self, key: &str, value: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(&json!({"key": key, "value": value}))?;
        line.push(b'\n');
        {
            let mut f = self.file.lock().expect("cache lock");
            f.write_all(&line).and_then(|_| f.sync_data()).with_context(|| format!("appending to {}", self.path.display()))?;
        }
        self.entries.lock().expect("cache lock").insert(key.to_string(), value.clone());
        Ok(())
    }
}
