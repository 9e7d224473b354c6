//! Helpers: run the binary and show everything on failure; find oracle tools (required when
//! `EC2AZURE_REQUIRE_ORACLES` is set, as in CI, so an oracle test never skips silently there).

use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Out {
    pub cmd: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nexit: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{self}"))
    }
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.expect_code(0)
    }
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{self}"
        );
        self
    }
}

fn run_cmd(mut c: Command) -> Out {
    let cmd = format!("{c:?}");
    let o = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    Out {
        cmd,
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs `ec2azure ARGS`.
pub fn ec2azure<I, S>(args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(env!("CARGO_BIN_EXE_ec2azure"));
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    run_cmd(c)
}

/// Runs any program.
pub fn run<I, S>(program: &str, args: I) -> Out
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    run_cmd(c)
}

/// `true` when `tool` can run. When it cannot: a panic under `EC2AZURE_REQUIRE_ORACLES`,
/// otherwise a note and `false` (the caller skips).
pub fn have(tool: &str, probe: &[&str]) -> bool {
    have_or(tool, probe, "")
}

/// [`have`], with `hint` (how to get the tool) after the panic or the note.
fn have_or(tool: &str, probe: &[&str], hint: &str) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("EC2AZURE_REQUIRE_ORACLES").is_some() {
            panic!("oracle {tool} is required (EC2AZURE_REQUIRE_ORACLES) but cannot run{hint}");
        }
        eprintln!("note: {tool} not available, oracle check skipped{hint}");
    }
    ok
}

/// The emulator `name` at the version `scripts/install-test-deps.sh` pins: `$var` when set (a
/// path, or a bare name to take the one on PATH), else the project-local copy at `local`
/// (relative to the checkout, under the ignored `.test-tools/`). Never the one on PATH by
/// default: another version there (a global moto 5.2.1, say) answers differently. `None` (the
/// caller skips) when it cannot run `probe`; a panic under `EC2AZURE_REQUIRE_ORACLES`.
pub fn pinned_tool(var: &str, local: &str, probe: &[&str]) -> Option<String> {
    let tool = match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => p(&Path::new(env!("CARGO_MANIFEST_DIR")).join(local)).to_string(),
    };
    let hint = format!(" (run scripts/install-test-deps.sh, or set {var} to another copy)");
    have_or(&tool, probe, &hint).then_some(tool)
}

/// moto's server (`moto[server]`, PyPI) in the project's virtual environment, or
/// `$EC2AZURE_MOTO_SERVER`.
pub fn moto_server() -> Option<String> {
    pinned_tool(
        "EC2AZURE_MOTO_SERVER",
        ".test-tools/venv/bin/moto_server",
        &["--help"],
    )
}

/// Azurite's Blob service (npm `azurite`) in the project's local `node_modules`, or
/// `$EC2AZURE_AZURITE_BLOB`.
pub fn azurite_blob() -> Option<String> {
    pinned_tool(
        "EC2AZURE_AZURITE_BLOB",
        ".test-tools/node/node_modules/.bin/azurite-blob",
        &["--version"],
    )
}

pub fn have_qemu() -> bool {
    have("qemu-img", &["--version"])
}

/// The libvhdi oracle script (Debian's python3 with python3-libvhdi).
pub fn libvhdi_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vhdiexport.py")
}

pub fn have_libvhdi() -> bool {
    have("/usr/bin/python3", &["-c", "import pyvhdi"]) && have("vhdiinfo", &["-V"])
}

/// A sparse file of `size` bytes holding `writes` at their offsets, holes elsewhere.
pub fn sparse_file(path: &Path, size: u64, writes: &[(u64, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in writes {
        f.write_all_at(data, *off).unwrap();
    }
}

/// Deterministic non-zero bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .map(|b| b ^ seed)
        .map(|b| if b == 0 { 1 } else { b })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    ec2azure::digest::sha256(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Starts `program` with the arguments `args(port)` on a free port of 127.0.0.1 and waits (up to
/// 60 s) until it accepts connections: the emulators (moto, Azurite) the cloud tests talk to.
pub fn spawn_on_free_port(
    program: &str,
    args: impl Fn(u16) -> Vec<String>,
) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(program)
        .args(args(port))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{program} exited ({status}) before it listened on port {port}");
        }
        assert!(t.elapsed().as_secs() < 60, "{program} did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    (child, port)
}

/// A moto server started with the images of `scenario` (moto takes them from the file
/// `MOTO_AMIS_PATH` names at its start: it ignores RegisterImage's details), killed when
/// dropped. `None` when moto is not installed (and oracles are not required).
pub struct MotoWithImages {
    child: std::process::Child,
    pub url: String,
    _amis: tempfile::TempDir,
}

impl Drop for MotoWithImages {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn moto_with_images(scenario: &ec2azure::cloud::ec2::Scenario) -> Option<MotoWithImages> {
    let exe = moto_server()?;
    let dir = tempfile::tempdir().unwrap();
    let amis = dir.path().join("amis.json");
    let v = ec2azure::cloud::aws_ec2::moto_amis(scenario);
    std::fs::write(&amis, serde_json::to_vec(&v).unwrap()).unwrap();
    // `env` sets MOTO_AMIS_PATH for moto alone (it execs moto: the child is moto).
    let env = format!("MOTO_AMIS_PATH={}", p(&amis));
    let (child, port) = spawn_on_free_port("env", |port| {
        vec![
            env.clone(),
            exe.clone(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]
    });
    Some(MotoWithImages {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _amis: dir,
    })
}
