//! The relay and consumer processes under supervision: started from this binary (its `cqrs`
//! role), killed on purpose by the fault schedule, started again whenever they end. An exit the
//! soak did not cause is recorded with its status and the tail of the process's log.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cqrs_tests::rng::Rng;

/// One supervised process.
struct Proc {
    /// `relay`, `consumer-1`, ...
    label: String,
    args: Vec<String>,
    child: Child,
    /// Killed by the soak: its end is expected.
    killed: bool,
}

/// The processes of one setup.
pub struct Supervisor {
    dir: PathBuf,
    procs: Mutex<Vec<Proc>>,
    /// Exits the soak did not cause: label, status, last log lines.
    pub unexpected: Mutex<Vec<String>>,
}

impl Supervisor {
    /// Processes run in `dir` (its `cqrs.toml` configures them) and log to `<label>.log` there.
    pub fn new(dir: &Path) -> Supervisor {
        Supervisor {
            dir: dir.to_path_buf(),
            procs: Mutex::new(Vec::new()),
            unexpected: Mutex::new(Vec::new()),
        }
    }

    fn spawn_child(&self, label: &str, args: &[String]) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{label}.log")))
            .expect("the process log opens");
        Command::new(std::env::current_exe().expect("this binary's path"))
            .arg("cqrs")
            .args(args)
            .current_dir(&self.dir)
            .env("CQRS_LOG", "warn")
            .env_remove("CQRS_CRASH_POINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("this binary starts again as a cqrs process")
    }

    /// Start `args` (a `cqrs` command line) as `label`.
    pub fn start(&self, label: &str, args: Vec<String>) {
        let child = self.spawn_child(label, &args);
        self.procs.lock().unwrap().push(Proc {
            label: label.to_string(),
            args,
            child,
            killed: false,
        });
    }

    /// SIGKILL one running process whose label starts with `role`, chosen by `rng`; its label.
    pub fn kill(&self, role: &str, rng: &mut Rng) -> Option<String> {
        let mut procs = self.procs.lock().unwrap();
        let matching: Vec<usize> = (0..procs.len())
            .filter(|i| procs[*i].label.starts_with(role) && !procs[*i].killed)
            .collect();
        let p = &mut procs[*matching.get(rng.below(matching.len().max(1) as u64) as usize)?];
        p.killed = true;
        let _ = p.child.kill();
        Some(p.label.clone())
    }

    /// Start again every process that ended; record the ends the soak did not cause.
    pub fn tend(&self) {
        let mut procs = self.procs.lock().unwrap();
        for i in 0..procs.len() {
            let status = procs[i].child.try_wait().ok().flatten();
            let Some(status) = status else { continue };
            let p = &mut procs[i];
            if !p.killed {
                self.unexpected.lock().unwrap().push(format!(
                    "{} exited with {status}: {}",
                    p.label,
                    tail(&self.dir.join(format!("{}.log", p.label)))
                ));
            }
            let (label, args) = (p.label.clone(), p.args.clone());
            let child = self.spawn_child(&label, &args);
            let p = &mut procs[i];
            p.child = child;
            p.killed = false;
        }
    }

    /// SIGTERM to every process; their labels and exit statuses (None: still running after
    /// `grace`, then killed).
    pub fn terminate(&self, grace: Duration) -> Vec<(String, Option<ExitStatus>)> {
        let mut procs = self.procs.lock().unwrap();
        for p in procs.iter() {
            let _ = Command::new("kill")
                .args(["-TERM", &p.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + grace;
        procs
            .drain(..)
            .map(|mut p| {
                let status = loop {
                    if let Ok(Some(s)) = p.child.try_wait() {
                        break Some(s);
                    }
                    if Instant::now() > deadline {
                        let _ = p.child.kill();
                        let _ = p.child.wait();
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                (p.label, status)
            })
            .collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for p in self.procs.lock().unwrap().iter_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The last lines of a log file, on one line.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}
