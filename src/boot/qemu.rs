//! The VM: finding `qemu-system-x86_64` and OVMF, the command line (firmware, accelerator, the
//! disk served read-only, serial console, firmware debug port, QMP socket, a VGA screen without
//! a window), and the process itself, which is always killed and reaped when its [`Vm`] is
//! dropped — after an error, at the timeout, on Ctrl-C — and dies with us if we are killed
//! (`PR_SET_PDEATHSIG`).
//!
//! ```text
//!   qemu-system-x86_64 -nodefaults -no-user-config -machine pc|q35 -accel kvm|tcg -m 512
//!     -display none -vga std -no-reboot -no-shutdown
//!     [-drive if=pflash,readonly=on,file=OVMF_CODE.fd -drive if=pflash,file=DIR/vars.fd]
//!     -drive file=DISK,format=F[,size=N],if=none,id=disk0,snapshot=on   (writes go to a temporary
//!     -device ide-hd,drive=disk0,bootindex=0                      overlay, never the input)
//!     -chardev file,id=serial0,path=DIR/serial.log -serial chardev:serial0
//!     -chardev file,id=debug0,path=DIR/debug.log -device isa-debugcon,iobase=0x402,chardev=debug0
//!     -qmp unix:DIR/qmp.sock,server=on,wait=off
//! ```

use crate::error::{Error, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where Debian, Fedora and Arch put OVMF's code and variable store (4 MiB builds first).
const OVMF_PAIRS: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    (
        "/usr/share/edk2/x64/OVMF_CODE.fd",
        "/usr/share/edk2/x64/OVMF_VARS.fd",
    ),
    (
        "/usr/share/qemu/OVMF_CODE.fd",
        "/usr/share/qemu/OVMF_VARS.fd",
    ),
];

/// The qemu binary: `$EC2AZURE_QEMU`, else `qemu-system-x86_64` on PATH.
pub fn find_qemu() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("EC2AZURE_QEMU") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::not_found(
                "qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86; \
                 or set EC2AZURE_QEMU)",
            )
        })
}

/// OVMF's code and variable-store template: `$EC2AZURE_OVMF_CODE` and `$EC2AZURE_OVMF_VARS`,
/// else the first pair found in the usual places.
pub fn find_ovmf() -> Result<(PathBuf, PathBuf)> {
    if let (Some(c), Some(v)) = (
        std::env::var_os("EC2AZURE_OVMF_CODE"),
        std::env::var_os("EC2AZURE_OVMF_VARS"),
    ) {
        return Ok((c.into(), v.into()));
    }
    OVMF_PAIRS
        .iter()
        .map(|(c, v)| (PathBuf::from(c), PathBuf::from(v)))
        .find(|(c, v)| c.is_file() && v.is_file())
        .ok_or_else(|| {
            Error::not_found(
                "OVMF (UEFI firmware for qemu) is not installed (Debian: apt-get install ovmf; \
                 or set EC2AZURE_OVMF_CODE and EC2AZURE_OVMF_VARS)",
            )
        })
}

/// `true` when this process may use KVM.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Everything the command line needs.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The qemu binary.
    pub qemu: PathBuf,
    /// `Some((code, vars))` for UEFI (vars is our private copy), `None` for SeaBIOS.
    pub ovmf: Option<(PathBuf, PathBuf)>,
    /// Use KVM (else TCG).
    pub kvm: bool,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The disk file and the format qemu reads it as (`raw`, `vpc`, `vhdx`, `qcow2`, `vmdk`).
    pub disk: PathBuf,
    /// qemu's driver options for it (`format=raw`, `format=raw,size=N`, `format=vpc`, ...).
    pub disk_format: String,
    /// Serve the disk through a temporary overlay (`snapshot=on`): the file is never written.
    /// `false` only for a private temporary copy.
    pub snapshot: bool,
    /// The folder for the socket, logs and variable store.
    pub dir: PathBuf,
}

impl VmSpec {
    /// The serial console log.
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    /// The firmware debug port (0x402) log.
    pub fn debug_log(&self) -> PathBuf {
        self.dir.join("debug.log")
    }
    /// The QMP socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    /// qemu's own stderr.
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }

    /// The arguments after the binary.
    pub fn args(&self) -> Vec<String> {
        let opt = |p: &Path| {
            // qemu's option syntax: a comma in a value is written twice.
            p.display().to_string().replace(',', ",,")
        };
        let mut a: Vec<String> = vec![
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-machine".into(),
            if self.ovmf.is_some() {
                "q35".into()
            } else {
                "pc".into()
            },
            "-accel".into(),
            if self.kvm { "kvm".into() } else { "tcg".into() },
            "-m".into(),
            self.memory_mib.to_string(),
            "-display".into(),
            "none".into(),
            "-vga".into(),
            "std".into(),
            // A reboot or power-off stops the VM and keeps qemu for the screenshot.
            "-no-reboot".into(),
            "-no-shutdown".into(),
        ];
        if self.kvm {
            a.extend(["-cpu".into(), "host".into()]);
        }
        if let Some((code, vars)) = &self.ovmf {
            a.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={}", opt(code)),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", opt(vars)),
            ]);
        }
        a.extend([
            "-drive".into(),
            format!(
                "file={},{},if=none,id=disk0,cache=unsafe{}",
                opt(&self.disk),
                self.disk_format,
                if self.snapshot { ",snapshot=on" } else { "" }
            ),
            "-device".into(),
            "ide-hd,drive=disk0,bootindex=0".into(),
            "-chardev".into(),
            format!("file,id=serial0,path={}", opt(&self.serial_log())),
            "-serial".into(),
            "chardev:serial0".into(),
            "-chardev".into(),
            format!("file,id=debug0,path={}", opt(&self.debug_log())),
            "-device".into(),
            "isa-debugcon,iobase=0x402,chardev=debug0".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", opt(&self.qmp_socket())),
        ]);
        a
    }
}

/// A running qemu, killed and reaped on drop.
pub struct Vm {
    child: Child,
    /// Its process id.
    pub pid: u32,
}

impl Vm {
    /// Starts qemu for `spec`, in its own process group (a terminal's Ctrl-C reaches us, and we
    /// stop it), killed by the kernel if this process dies first.
    ///
    /// # Errors
    /// The binary cannot be started.
    pub fn start(spec: &VmSpec) -> Result<Vm> {
        let stderr = std::fs::File::create(spec.stderr_log())
            .map_err(|e| Error::io("creating qemu's log", e).with_path(spec.stderr_log()))?;
        let mut cmd = Command::new(&spec.qemu);
        cmd.args(spec.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            // The temporary overlay of snapshot=on goes into our folder, removed with it.
            .env("TMPDIR", &spec.dir)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours; it runs in the
        // child between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Error::io(format!("starting {}", spec.qemu.display()), e).with_path(&spec.qemu)
        })?;
        Ok(Vm {
            pid: child.id(),
            child,
        })
    }

    /// `Some(exit status text)` when qemu has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for qemu: {e}")),
        }
    }

    /// [`Vm::exited`], waiting up to `wait` for it.
    pub fn exited_within(&mut self, wait: std::time::Duration) -> Option<String> {
        let until = std::time::Instant::now() + wait;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if std::time::Instant::now() >= until {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits up to `grace` for qemu to exit by itself (after QMP `quit`), then kills it.
    pub fn stop(&mut self, grace: std::time::Duration) {
        let until = std::time::Instant::now() + grace;
        while std::time::Instant::now() < until {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
