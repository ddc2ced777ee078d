//! The sandbox stops infinite loops, fork bombs and memory hogs, and blocks
//! writes outside its folder, network access and the caller's environment.

use std::time::Duration;
use vul2safe::eval::sandbox::{namespaces_available, run, Isolation, Limits, Outcome};

/// Sandboxed processes all run as `nobody` and share its process limit, so
/// the tests take turns (the fork bomb would starve the others).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn limits() -> Option<Limits> {
    if !namespaces_available() {
        eprintln!("SKIPPED: this process cannot create network/mount namespaces (needs root or CAP_SYS_ADMIN)");
        return None;
    }
    Some(Limits { cpu_secs: 2, wall: Duration::from_secs(5), address_space: 512 << 20, ..Limits::default() })
}

fn py(code: &str, l: &Limits) -> vul2safe::eval::sandbox::RunResult {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    run("python3", &["main.py"], &[("main.py", code)], l).unwrap()
}

#[test]
fn normal_programs_run_and_see_their_files() {
    let Some(l) = limits() else { return };
    let r = {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        run("python3", &["main.py"], &[("main.py", "import helper\nprint(helper.X * 2)\n"), ("helper.py", "X = 21\n")], &l).unwrap()
    };
    assert!(r.success(), "{r:?}");
    assert_eq!(r.stdout.trim(), "42");
    assert!(r.isolated);
    let r = py("import sys\nsys.exit(3)\n", &l);
    assert_eq!(r.outcome, Outcome::Exited(3));
}

#[test]
fn infinite_loops_are_stopped() {
    let Some(l) = limits() else { return };
    let r = py("while True:\n    pass\n", &l);
    assert!(matches!(r.outcome, Outcome::Signaled(_) | Outcome::TimedOut), "{r:?}");
    assert!(r.wall < Duration::from_secs(6));
    // A sleeper burns no CPU: the wall clock stops it.
    let r = py("import time\ntime.sleep(60)\n", &l);
    assert_eq!(r.outcome, Outcome::TimedOut);
}

#[test]
fn fork_bombs_are_contained() {
    let Some(l) = limits() else { return };
    let r = py("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", &l);
    assert!(!r.success(), "{r:?}");
    assert!(r.wall < Duration::from_secs(8), "took {:?}", r.wall);
    // The machine still forks normally afterwards.
    assert!(std::process::Command::new("true").status().unwrap().success());
}

#[test]
fn memory_hogs_are_stopped() {
    let Some(l) = limits() else { return };
    let r = py("x = bytearray(2 * 1024 * 1024 * 1024)\nprint('allocated')\n", &l);
    assert!(!r.success() && !r.stdout.contains("allocated"), "{r:?}");
    assert!(r.stderr.contains("MemoryError"), "{}", r.stderr);
}

#[test]
fn writes_outside_the_folder_do_not_escape() {
    let Some(l) = limits() else { return };
    let marker = format!("vul2safe-escape-{}", std::process::id());
    let outside_tmp = std::env::temp_dir().join(&marker);
    let repo_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(&marker);
    let code = format!(
        "import os\nopen('inside.txt', 'w').write('ok')\nresults = []\nfor p in [{:?}, {:?}, '/etc/{marker}']:\n    try:\n        open(p, 'w').write('x')\n        results.append('wrote')\n    except OSError:\n        results.append('denied')\nprint(','.join(results))\n",
        outside_tmp.display().to_string(),
        repo_file.display().to_string()
    );
    let r = py(&code, &l);
    assert!(r.success(), "{r:?}");
    assert!(!outside_tmp.exists(), "a /tmp write reached the host");
    assert!(!repo_file.exists(), "a write reached the repository");
    assert!(!std::path::Path::new(&format!("/etc/{marker}")).exists());
    assert!(r.stdout.trim().ends_with("denied,denied"), "{}", r.stdout);
}

#[test]
fn network_and_environment_are_cut_off() {
    let Some(l) = limits() else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "reachable from outside the sandbox");
    let code = format!(
        "import os, socket\nprint('SECRET' in os.environ)\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('blocked')\n"
    );
    std::env::set_var("SECRET", "hunter2");
    let r = py(&code, &l);
    assert_eq!(r.stdout.split_whitespace().collect::<Vec<_>>(), vec!["False", "blocked"], "{r:?}");
}

#[test]
fn best_effort_mode_reports_what_it_got() {
    let l = Limits { isolation: Isolation::BestEffort, wall: Duration::from_secs(5), ..Limits::default() };
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run("python3", &["-c", "print(1)"], &[], &l).unwrap();
    assert!(r.success());
    assert_eq!(r.isolated, namespaces_available());
    assert!(run("python3", &[], &[("../evil", "x")], &l).is_err(), "file names cannot leave the folder");
}
