//! A real django-cqrs beside the Rust side: a Python virtual environment with django-cqrs 3.1.0,
//! Django 5.2, psycopg2-binary and pika from the package index (made once, cached), and the
//! Django project in tests/django/project as a master or a replica on a database of its own.
//!
//! The environment lives in `$CQRS_DJANGO_VENV` or `~/.cache/cqrs/venv-django-cqrs-3.1.0`; it is
//! built in a temporary directory and renamed into place, so a half-made one is never used. If
//! it cannot be made (no `python3`, no index), the test fails with pip's own words: these tests
//! never skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::{Kind, TestBroker, TestDb};

/// What the environment holds, pinned: what the captured fixtures were recorded with.
pub const REQUIREMENTS: &[&str] = &[
    "django-cqrs==3.1.0",
    "Django==5.2.*",
    "psycopg2-binary==2.9.*",
    "pika==1.4.*",
];

/// The environment's directory, made on first use in this process.
pub fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let dir = std::env::var_os("CQRS_DJANGO_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("venv-django-cqrs-3.1.0"));
        python_env(&dir, REQUIREMENTS)
    })
}

/// `~/.cache/cqrs`: where the tests' Python environments are kept between runs.
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is set");
    Path::new(&home).join(".cache/cqrs")
}

/// A Python virtual environment at `dir` holding `requirements`: used as it is when a marker says
/// it holds exactly those, else built beside it and renamed into place, so a half-made one is
/// never used. Panics (failing the test) with pip's own words when it cannot be made.
pub fn python_env(dir: &Path, requirements: &[&str]) -> PathBuf {
    let marker = dir.join("cqrs-requirements.txt");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return dir.to_path_buf();
    }
    let parent = dir.parent().expect("the venv has a parent directory");
    std::fs::create_dir_all(parent).expect("the venv's parent directory");
    let name = dir
        .file_name()
        .expect("the venv has a name")
        .to_string_lossy();
    let building = parent.join(format!(".{name}-building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    succeed(Command::new("python3").arg("-m").arg("venv").arg(&building));
    succeed(
        Command::new(building.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(requirements),
    );
    std::fs::write(building.join("cqrs-requirements.txt"), &wanted).expect("marker written");
    let _ = std::fs::remove_dir_all(dir);
    if std::fs::rename(&building, dir).is_err() {
        // Another process put its own in place meanwhile: use that one.
        let _ = std::fs::remove_dir_all(&building);
    }
    dir.to_path_buf()
}

/// Run `command` to the end; panic (failing the test) with its output unless it succeeds; its
/// stdout.
#[track_caller]
pub fn succeed(command: &mut Command) -> String {
    let out = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?} cannot start: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Django project's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `interop_master`: publishes `interop_item` and `interop_label`.
    Master,
    /// `interop_replica`: consumes them from the test broker's queue.
    Replica,
}

/// The Django project as a master or replica on a database of its own (tables made by Django's
/// `migrate`), on `broker`'s exchange (and queue, as a replica).
pub struct Django {
    /// Its database.
    pub db: TestDb,
    role: Role,
    exchange: String,
    queue: String,
    broker_url: String,
    time_zone: String,
}

impl Django {
    /// A fresh database with the role's tables, in `TIME_ZONE` UTC.
    pub fn new(role: Role, broker: &TestBroker) -> Django {
        Django::in_zone(role, broker, "UTC")
    }

    /// The same with Django's `TIME_ZONE` set to `zone`.
    pub fn in_zone(role: Role, broker: &TestBroker, zone: &str) -> Django {
        let django = Django {
            db: TestDb::empty(Kind::Postgres),
            role,
            exchange: broker.exchange.clone(),
            queue: broker.queue.clone(),
            broker_url: pika_url(&broker.url),
            time_zone: zone.to_string(),
        };
        django.manage(&["migrate", "--run-syncdb", "--verbosity", "0"]);
        django
    }

    /// `manage.py <args>`; panics with its output unless it succeeds; its stdout.
    #[track_caller]
    pub fn manage(&self, args: &[&str]) -> String {
        succeed(&mut self.command(args))
    }

    /// `manage.py <args>` left running (e.g. `cqrs_consume`) until the returned guard drops.
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(&mut self.command(args))
    }

    /// `manage.py <args>` as a command to run or pipe.
    pub fn command(&self, args: &[&str]) -> Command {
        let project = Path::new(env!("CARGO_MANIFEST_DIR")).join("django/project");
        let mut c = Command::new(venv().join("bin/python"));
        c.arg(project.join("manage.py"))
            .args(args)
            .current_dir(&project)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env(
                "INTEROP_ROLE",
                match self.role {
                    Role::Master => "master",
                    Role::Replica => "replica",
                },
            )
            .env("INTEROP_DB", database_name(&self.db))
            .env("INTEROP_AMQP_URL", &self.broker_url)
            .env("INTEROP_EXCHANGE", &self.exchange)
            .env("INTEROP_QUEUE", &self.queue)
            .env("INTEROP_TIME_ZONE", &self.time_zone);
        let server = url::Server::of(&self.db.url);
        c.env("INTEROP_DB_HOST", server.host)
            .env("INTEROP_DB_PORT", server.port)
            .env("INTEROP_DB_USER", server.user);
        c
    }
}

/// A process started in a process group of its own, stopped with its workers (SIGTERM to the
/// group, SIGKILL after 10 s) when dropped, also when the test fails.
pub struct Running(Child);

impl Running {
    /// Start `command` with stdin and stdout closed.
    pub fn start(command: &mut Command) -> Running {
        use std::os::unix::process::CommandExt;
        Running(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("{command:?} cannot start: {e}")),
        )
    }

    /// Its exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.exited().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.wait();
    }
}

fn database_name(db: &TestDb) -> String {
    db.url
        .rsplit('/')
        .next()
        .expect("a database name")
        .to_string()
}

/// The test broker for django-cqrs: its URL parser reads host, port, user and password only
/// (the vhost is always `/`).
fn pika_url(url: &str) -> String {
    url.strip_suffix("%2f")
        .or_else(|| url.strip_suffix("%2F"))
        .unwrap_or(url)
        .to_string()
}

mod url {
    /// Host, port and user of a `postgres://user@host:port/db` URL (the test server's).
    pub struct Server {
        pub host: String,
        pub port: String,
        pub user: String,
    }

    impl Server {
        pub fn of(url: &str) -> Server {
            let rest = url
                .split_once("://")
                .map(|(_, r)| r)
                .unwrap_or(url)
                .split('/')
                .next()
                .unwrap_or("");
            let (user, hostport) = rest.rsplit_once('@').unwrap_or(("postgres", rest));
            let user = user.split(':').next().unwrap_or("postgres");
            let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
            Server {
                host: host.to_string(),
                port: port.to_string(),
                user: user.to_string(),
            }
        }
    }
}
