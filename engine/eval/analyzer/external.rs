//! Running an external analyzer: find its binary (PATH, then the project's
//! `.venv-tools/bin`), run it on files written to a scratch folder with a time
//! limit, and turn "not installed", crashes and timeouts into clear errors.

use super::Source;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where `tools/setup.sh` installs the Python-based analyzers.
fn venv_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin")
}

/// The full path of `tool`, or an error that says how to install it.
/// `$VUL2SAFE_TOOL_PATH`, when set, replaces the search (PATH, then the venv).
pub fn locate(tool: &str) -> Result<PathBuf> {
    let dirs: Vec<PathBuf> = match std::env::var_os("VUL2SAFE_TOOL_PATH") {
        Some(p) => std::env::split_paths(&p).collect(),
        None => std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
    };
    let venv = std::env::var_os("VUL2SAFE_TOOL_PATH").is_none().then(venv_bin);
    for dir in dirs.into_iter().chain(venv) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{tool} is not installed: run `bash tools/setup.sh` (it installs cppcheck, flawfinder, bandit, semgrep and codeshield)")
}

/// Sources written under one scratch folder, named so findings map back.
pub struct Staged {
    pub dir: tempfile::TempDir,
    /// Written path of each source, in input order.
    pub paths: Vec<PathBuf>,
}

/// Writes each source as `NNNN.<ext>` so tools see the right language.
pub fn stage(sources: &[Source]) -> Result<Staged> {
    let dir = tempfile::Builder::new().prefix("vul2safe-analyze").tempdir().context("creating a scratch folder")?;
    let mut paths = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let ext = match s.lang {
            crate::lang::Lang::C => "c",
            crate::lang::Lang::Cpp => "cpp",
            crate::lang::Lang::Python => "py",
        };
        let p = dir.path().join(format!("{i:05}.{ext}"));
        std::fs::write(&p, &s.text).with_context(|| format!("writing {}", p.display()))?;
        paths.push(p);
    }
    Ok(Staged { dir, paths })
}

/// Maps a path a tool reports back to the index of its source.
pub fn source_index(staged: &Staged, reported: &str) -> Option<usize> {
    let name = Path::new(reported).file_name()?;
    staged.paths.iter().position(|p| p.file_name() == Some(name))
}

pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a tool with a wall-clock limit; `ok_codes` are exit codes that mean success.
pub fn run(tool: &str, args: &[String], timeout: Duration, ok_codes: &[i32]) -> Result<Output> {
    let exe = locate(tool)?;
    let mut child = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{tool} timed out after {:.0} s", timeout.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
    let code = status.code();
    if !code.is_some_and(|c| ok_codes.contains(&c)) {
        let tail: String = stderr.chars().rev().take(400).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{tool} failed ({}): {}", code.map_or("killed by a signal".into(), |c| format!("exit code {c}")), tail.trim());
    }
    Ok(Output { status: code, stdout, stderr })
}
