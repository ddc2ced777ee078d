//! Runs generated code in a separate process with:
//! - rlimits on CPU time, address space, file size, open files and processes;
//! - a wall-clock timeout that kills the whole process group;
//! - a fresh temporary working directory and a cleared environment;
//! - no network (a new network namespace) and private /tmp, /var/tmp and
//!   /dev/shm (a new mount namespace with tmpfs there);
//! - as root, the unprivileged user `nobody`, so nothing outside the working
//!   directory is writable and the process limit applies.
//!
//! Namespaces need root (or CAP_SYS_ADMIN). Where they are unavailable the
//! sandbox refuses to run unless [`Isolation::BestEffort`] is asked for, in
//! which case it runs with rlimits, the timeout, the scratch directory and
//! the cleared environment only, and says so in [`RunResult::isolated`].

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `nobody` user and group ids the child runs as when we are root.
const NOBODY: u32 = 65534;
/// Bytes of stdout/stderr kept from a run.
const MAX_OUTPUT: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Fail unless network and mount namespaces can be created.
    Required,
    /// Run with what is available; the result says whether isolation held.
    BestEffort,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub cpu_secs: u64,
    pub wall: Duration,
    pub address_space: u64,
    pub file_size: u64,
    pub processes: u64,
    pub isolation: Isolation,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_secs: 5,
            wall: Duration::from_secs(10),
            address_space: 1 << 30,
            file_size: 16 << 20,
            processes: 32,
            isolation: Isolation::Required,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Signaled(i32),
    TimedOut,
}

#[derive(Clone, Debug)]
pub struct RunResult {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
    pub wall: Duration,
    /// Whether the namespaces (no network, private tmp) were in place.
    pub isolated: bool,
}

impl RunResult {
    pub fn success(&self) -> bool {
        self.outcome == Outcome::Exited(0)
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: plain syscall on a stack value.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// C strings the child needs, built before the fork (no allocation after it).
struct ChildPaths {
    tmpfs: Vec<CString>,
    tmpfs_type: CString,
    tmpfs_opts: CString,
    /// The working directory and each of its ancestors, shortest first, to
    /// recreate it inside a private tmpfs that hides it.
    workdir_prefixes: Vec<CString>,
    workdir: CString,
}

impl ChildPaths {
    fn new(workdir: &std::path::Path) -> Result<ChildPaths> {
        let c = |s: &str| CString::new(s).context("path with a NUL byte");
        let mut prefixes: Vec<CString> =
            workdir.ancestors().filter(|a| a.parent().is_some()).map(|a| c(&a.to_string_lossy())).collect::<Result<_>>()?;
        prefixes.reverse();
        Ok(ChildPaths {
            tmpfs: ["/tmp", "/var/tmp", "/dev/shm"].iter().map(|d| c(d)).collect::<Result<_>>()?,
            tmpfs_type: c("tmpfs")?,
            tmpfs_opts: c("size=64m,mode=1777")?,
            workdir_prefixes: prefixes,
            workdir: c(&workdir.to_string_lossy())?,
        })
    }
}

/// Everything the child does between fork and exec. Only async-signal-safe
/// calls: the strings were built before the fork.
fn child_setup(limits: &Limits, p: &ChildPaths, drop_to_nobody: bool, isolate: bool) -> std::io::Result<()> {
    // SAFETY: each call below is a raw syscall wrapper on valid pointers.
    unsafe {
        if libc::setsid() < 0 {
            return Err(errno());
        }
        if isolate {
            if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) != 0 {
                return Err(errno());
            }
            // Keep our mounts out of the parent's namespace.
            if libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(errno());
            }
            for dir in &p.tmpfs {
                libc::mount(
                    p.tmpfs_type.as_ptr(),
                    dir.as_ptr(),
                    p.tmpfs_type.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    p.tmpfs_opts.as_ptr().cast(),
                );
            }
            // The working directory may now be hidden under a private tmpfs. The
            // cwd (entered before this) still points at it, so recreate its path
            // and bind the real directory there again.
            for dir in &p.workdir_prefixes {
                libc::mkdir(dir.as_ptr(), 0o755);
            }
            if libc::mount(c"/proc/self/cwd".as_ptr(), p.workdir.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0
                || libc::chdir(p.workdir.as_ptr()) != 0
            {
                return Err(errno());
            }
        }
        set_limit(libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1)?;
        set_limit(libc::RLIMIT_AS, limits.address_space, limits.address_space)?;
        set_limit(libc::RLIMIT_FSIZE, limits.file_size, limits.file_size)?;
        set_limit(libc::RLIMIT_NPROC, limits.processes, limits.processes)?;
        set_limit(libc::RLIMIT_NOFILE, 64, 64)?;
        set_limit(libc::RLIMIT_CORE, 0, 0)?;
        if drop_to_nobody && (libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0) {
            return Err(errno());
        }
    }
    Ok(())
}

/// Whether this process can create the namespaces (probed once).
pub fn namespaces_available() -> bool {
    static PROBE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        let mut cmd = Command::new("/bin/true");
        // SAFETY: unshare is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| if libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) == 0 { Ok(()) } else { Err(errno()) });
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

/// Reads a pipe to its end (or [`MAX_OUTPUT`] bytes) on a thread; the
/// receiver gives up after a grace period if an escaped grandchild holds the
/// pipe open.
fn read_capped(mut r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if buf.len() < MAX_OUTPUT {
                buf.extend_from_slice(&chunk[..n.min(MAX_OUTPUT - buf.len())]);
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Writes `files` into a fresh directory and runs `program args` there.
pub fn run(program: &str, args: &[&str], files: &[(&str, &str)], limits: &Limits) -> Result<RunResult> {
    let isolate = namespaces_available();
    if !isolate && limits.isolation == Isolation::Required {
        bail!(
            "the sandbox needs network and mount namespaces (run as root or with CAP_SYS_ADMIN), or best-effort isolation must be allowed"
        );
    }
    let dir = tempfile::Builder::new().prefix("vul2safe-sandbox").tempdir().context("creating the sandbox directory")?;
    for (name, text) in files {
        if name.contains('/') || name.starts_with('.') {
            bail!("sandbox file name {name:?} must be a plain name");
        }
        std::fs::write(dir.path().join(name), text).with_context(|| format!("writing {name} into the sandbox"))?;
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        for entry in std::fs::read_dir(dir.path())?.flatten().map(|e| e.path()).chain([dir.path().to_path_buf()]) {
            std::os::unix::fs::chown(&entry, Some(NOBODY), Some(NOBODY)).with_context(|| format!("chown {}", entry.display()))?;
        }
    }
    let paths = ChildPaths::new(dir.path())?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", dir.path())
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child_limits = limits.clone();
    // SAFETY: child_setup only makes async-signal-safe syscalls on data prepared above.
    unsafe {
        cmd.pre_exec(move || child_setup(&child_limits, &paths, root, isolate));
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {program} in the sandbox"))?;
    let pgid = child.id() as i32;
    let out = read_capped(child.stdout.take().expect("piped"));
    let err = read_capped(child.stderr.take().expect("piped"));
    let outcome = loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            break match (status.code(), status.signal()) {
                (Some(c), _) => Outcome::Exited(c),
                (None, Some(s)) => Outcome::Signaled(s),
                _ => Outcome::Signaled(0),
            };
        }
        if t0.elapsed() > limits.wall {
            break Outcome::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Whatever the main process left behind (forks, background jobs) dies with it.
    // SAFETY: signalling our own child's process group.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let _ = child.wait();
    let grace = Duration::from_secs(1);
    let (stdout, stderr) = (out.recv_timeout(grace).unwrap_or_default(), err.recv_timeout(grace).unwrap_or_default());
    Ok(RunResult { outcome, stdout, stderr, wall: t0.elapsed(), isolated: isolate })
}
