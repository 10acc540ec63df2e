//! moat's microVM monitor: a safe, typed builder over libkrun (the crates.io `libkrun` crate,
//! linked in; no system libkrun needed). All `unsafe` lives in its `ffi` module.
//!
//! ```text
//!  VmConfig ─validate─► load libkrunfw (dlopen by path) ─► krun_create_ctx ─► vm config,
//!   root share (read-only, tag /dev/root) + init served as /init.krun, extra shares,
//!   vsock (TSI for INET sockets only when asked, else none) + port→unix socket maps, console
//!   file, env ─► krun_start_enter (never returns)
//! ```
//!
//! Facts from libkrun 1.19 this relies on:
//! - The kernel command line is `... init=/init.krun`; with the crate's default features off
//!   (no built-in init blob) nothing provides `/init.krun` unless we do: [`VmConfig::init`] is
//!   served there with `krun_fs_add_overlay_file`, so the user's root is never written.
//! - `krun_set_env` entries and the init's arguments go on the kernel command line, each quoted;
//!   so they must not hold `"` or control characters.
//! - libkrun `dlopen`s `libkrunfw.so.5` by name when the context is created; loading a chosen
//!   file first (same soname) makes it use that one.
//! - With TSI for INET sockets (`krun_add_vsock(ctx, KRUN_TSI_HIJACK_INET)`), libkrun adds
//!   `tsi_hijack` to the kernel command line and makes each guest INET socket (connect, listen,
//!   UDP) a socket of this process, in this process's network namespace; a guest listener binds
//!   the same address and port here (no port map). Without the flag, the VMM refuses every
//!   proxy request (the guest kernel may still have AF_TSI: nothing answers it), and it refuses
//!   unix-socket proxies unless `KRUN_TSI_HIJACK_UNIX`, which moat never sets.
//! - When the guest powers off, libkrun ends the process with `_exit` (no `atexit` hooks run):
//!   exit code 0 for a clean power-off, 1 for a vCPU error (e.g. `KVM_EXIT_INTERNAL_ERROR`).

use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};

mod ffi;

/// The virtiofs tag libkrun's kernel command line mounts as the guest's root.
pub const ROOT_TAG: &str = "/dev/root";

/// Where the kernel looks for init in the root (`init=/init.krun` on libkrun's command line).
pub const INIT_PATH_IN_ROOT: &str = "init.krun";

/// The guest kernel library libkrun loads.
pub const LIBKRUNFW: &str = "libkrunfw.so.5";

/// The most vCPUs libkrun's `krun_set_vm_config` accepts (a `u8`), bounded by KVM's usual limit.
pub const MAX_VCPUS: u8 = 64;

/// A host directory shared with the guest over virtiofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The tag the guest mounts (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// The host directory.
    pub host_path: PathBuf,
    /// Whether the host side refuses writes.
    pub read_only: bool,
}

/// Who connects on a vsock port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VsockDirection {
    /// The guest connects to the port; libkrun connects that to the host's listening socket.
    GuestConnects,
    /// libkrun listens on the socket; host connections reach a guest listening on the port.
    HostConnects,
}

/// A vsock port mapped to a host unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockPort {
    /// The vsock port.
    pub port: u32,
    /// The host unix socket.
    pub socket: PathBuf,
    /// Who connects.
    pub direction: VsockDirection,
}

/// Everything a microVM is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// vCPUs, 1..=[`MAX_VCPUS`].
    pub vcpus: u8,
    /// Guest RAM in MiB (at least [`MIN_MEMORY_MIB`]).
    pub memory_mib: u32,
    /// The host directory shared (read-only) as the guest's root.
    pub root: PathBuf,
    /// The init program's bytes, served as `/init.krun` in the root (a static executable: it
    /// runs before anything is mounted).
    pub init: Vec<u8>,
    /// More virtiofs shares.
    pub shares: Vec<Share>,
    /// vsock port mappings.
    pub vsock_ports: Vec<VsockPort>,
    /// Where the guest console goes (appended).
    pub console: Option<PathBuf>,
    /// The init's environment, exactly (the host's is never passed).
    pub env: Vec<(String, String)>,
    /// The `libkrunfw.so.5` to load; `None`: libkrun's own `dlopen` by name (the loader path).
    pub krunfw: Option<PathBuf>,
    /// libkrun's log level on stderr: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub log_level: u32,
    /// TSI for the guest's INET sockets: each becomes a socket of this process, made in this
    /// process's network namespace (so whatever judges that namespace's traffic judges the
    /// guest's). `false`: the guest has no network at all.
    pub tsi_inet: bool,
}

/// The least guest RAM accepted: a libkrunfw kernel needs some room to boot at all.
pub const MIN_MEMORY_MIB: u32 = 64;

/// Why a VM could not be configured or started.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The configuration is unusable; nothing was started.
    #[error("invalid VM configuration: {0}")]
    Invalid(String),
    /// `libkrunfw.so.5` could not be loaded.
    #[error("cannot load the guest kernel library {}: {reason}", path.display())]
    Krunfw {
        /// The file tried.
        path: PathBuf,
        /// `dlerror`'s text, or what is wrong with it.
        reason: String,
    },
    /// A libkrun configuration call failed.
    #[error("libkrun {call} failed: {errno}")]
    Call {
        /// The C function.
        call: &'static str,
        /// Its error.
        errno: String,
    },
    /// `krun_start_enter` returned, so the VM did not start (libkrun printed its reason on
    /// stderr).
    #[error("libkrun could not start the VM (krun_start_enter: {errno}){hint}")]
    Start {
        /// Its error.
        errno: String,
        /// A likely cause for common errnos.
        hint: &'static str,
    },
}

fn call_error(call: &'static str) -> impl FnOnce(ffi::Errno) -> VmmError {
    move |errno| VmmError::Call { call, errno: errno.to_string() }
}

/// Loads `path` as libkrunfw (checking it really is one): the doctor's loadability check, and
/// what [`VmConfig::enter`] does before libkrun looks for the library itself.
pub fn load_krunfw(path: &Path) -> Result<(), VmmError> {
    ffi::load_krunfw(path).map_err(|reason| VmmError::Krunfw { path: path.to_owned(), reason })
}

fn cstring(what: &str, text: &str) -> Result<CString, VmmError> {
    CString::new(text).map_err(|_| VmmError::Invalid(format!("{what} {text:?} holds a NUL byte")))
}

fn path_cstring(what: &str, path: &Path) -> Result<CString, VmmError> {
    ffi::path_cstring(path)
        .ok_or_else(|| VmmError::Invalid(format!("{what} {} holds a NUL byte", path.display())))
}

/// Text that goes on the kernel command line inside double quotes.
fn check_cmdline_text(what: &str, text: &str) -> Result<(), VmmError> {
    if text.chars().any(|c| c == '"' || c.is_control()) {
        return Err(VmmError::Invalid(format!(
            "{what} {text:?} holds a quote or control character (it goes on the kernel command line)"
        )));
    }
    Ok(())
}

impl VmConfig {
    /// A configuration with libkrun's log at errors only and nothing else but what is given.
    pub fn new(root: PathBuf, init: Vec<u8>) -> VmConfig {
        VmConfig {
            vcpus: 1,
            memory_mib: 512,
            root,
            init,
            shares: Vec::new(),
            vsock_ports: Vec::new(),
            console: None,
            env: Vec::new(),
            krunfw: None,
            log_level: 1,
            tsi_inet: false,
        }
    }

    /// Checks every rule [`VmConfig::enter`] relies on, without touching libkrun.
    pub fn validate(&self) -> Result<(), VmmError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(VmmError::Invalid(format!(
                "{} vCPUs (allowed: 1 to {MAX_VCPUS})",
                self.vcpus
            )));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(VmmError::Invalid(format!(
                "{} MiB of RAM (at least {MIN_MEMORY_MIB})",
                self.memory_mib
            )));
        }
        if self.init.is_empty() {
            return Err(VmmError::Invalid("the init program is empty".into()));
        }
        if !self.root.is_absolute() {
            return Err(VmmError::Invalid(format!(
                "the root {} is not an absolute path",
                self.root.display()
            )));
        }
        let mut tags = vec![ROOT_TAG];
        for share in &self.shares {
            if share.tag.is_empty() || share.tag.len() > 36 {
                return Err(VmmError::Invalid(format!(
                    "share tag {:?} must be 1 to 36 bytes (virtiofs limit)",
                    share.tag
                )));
            }
            if tags.contains(&share.tag.as_str()) {
                return Err(VmmError::Invalid(format!("share tag {:?} is used twice", share.tag)));
            }
            tags.push(&share.tag);
        }
        let mut ports = Vec::new();
        for mapping in &self.vsock_ports {
            if ports.contains(&mapping.port) {
                return Err(VmmError::Invalid(format!(
                    "vsock port {} is mapped twice",
                    mapping.port
                )));
            }
            ports.push(mapping.port);
        }
        for (key, value) in &self.env {
            let key_ok = !key.is_empty()
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !key.starts_with(|c: char| c.is_ascii_digit());
            if !key_ok {
                return Err(VmmError::Invalid(format!(
                    "environment name {key:?} (letters, digits and _ only)"
                )));
            }
            check_cmdline_text("environment value", value)?;
        }
        Ok(())
    }

    /// The environment as libkrun takes it: `KEY=VALUE` strings.
    fn env_strings(&self) -> Result<Vec<CString>, VmmError> {
        self.env.iter().map(|(k, v)| cstring("environment entry", &format!("{k}={v}"))).collect()
    }

    /// Builds the VM and runs it on this thread. Returns only when it could not start; once the
    /// guest runs, libkrun ends the process when it powers off (see the module docs).
    pub fn enter(self) -> Result<Infallible, VmmError> {
        self.validate()?;
        if let Some(path) = &self.krunfw {
            load_krunfw(path)?;
        }
        // libkrun installs a global logger; a second call in one process would panic in it.
        static LOG_SET: std::sync::Once = std::sync::Once::new();
        let mut log_result = Ok(());
        LOG_SET.call_once(|| log_result = ffi::set_log_level(self.log_level));
        log_result.map_err(call_error("krun_set_log_level"))?;
        let ctx = ffi::create_ctx().map_err(call_error("krun_create_ctx"))?;
        match self.configure(ctx) {
            Ok(()) => {}
            Err(err) => {
                ffi::free_ctx(ctx);
                return Err(err);
            }
        }
        let errno = ffi::start_enter(ctx);
        let hint = match errno.0 {
            libc::ENOENT => ": libkrunfw.so.5 was not found or lacks its symbols",
            libc::EINVAL => ": see libkrun's error above (KVM access, memory, devices)",
            _ => "",
        };
        Err(VmmError::Start { errno: errno.to_string(), hint })
    }

    fn configure(&self, ctx: u32) -> Result<(), VmmError> {
        ffi::set_vm_config(ctx, self.vcpus, self.memory_mib)
            .map_err(call_error("krun_set_vm_config"))?;
        let root_tag = cstring("tag", ROOT_TAG)?;
        let root = path_cstring("root", &self.root)?;
        ffi::add_virtiofs(ctx, &root_tag, &root, true).map_err(call_error("krun_add_virtiofs3"))?;
        // Leaked on purpose: libkrun serves these bytes for the life of the process.
        let init: &'static [u8] = Box::leak(self.init.clone().into_boxed_slice());
        let init_path = cstring("path", INIT_PATH_IN_ROOT)?;
        ffi::fs_add_overlay_file(ctx, &root_tag, &init_path, init, 0o755)
            .map_err(call_error("krun_fs_add_overlay_file"))?;
        for share in &self.shares {
            let tag = cstring("tag", &share.tag)?;
            let path = path_cstring("share", &share.host_path)?;
            ffi::add_virtiofs(ctx, &tag, &path, share.read_only)
                .map_err(call_error("krun_add_virtiofs3"))?;
        }
        ffi::add_vsock(ctx, self.tsi_inet).map_err(call_error("krun_add_vsock"))?;
        for mapping in &self.vsock_ports {
            let socket = path_cstring("vsock socket", &mapping.socket)?;
            let listen = mapping.direction == VsockDirection::HostConnects;
            ffi::add_vsock_port(ctx, mapping.port, &socket, listen)
                .map_err(call_error("krun_add_vsock_port2"))?;
        }
        if let Some(console) = &self.console {
            let console = path_cstring("console", console)?;
            ffi::set_console_output(ctx, &console)
                .map_err(call_error("krun_set_console_output"))?;
        }
        ffi::set_env(ctx, &self.env_strings()?).map_err(call_error("krun_set_env"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> VmConfig {
        VmConfig::new(PathBuf::from("/srv/root"), b"\x7fELF".to_vec())
    }

    #[test]
    fn a_plain_config_is_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn vcpus_and_memory_are_bounded() {
        let mut c = config();
        c.vcpus = 0;
        assert!(c.validate().unwrap_err().to_string().contains("0 vCPUs"));
        c.vcpus = MAX_VCPUS + 1;
        assert!(c.validate().is_err());
        c.vcpus = 2;
        c.memory_mib = MIN_MEMORY_MIB - 1;
        assert!(c.validate().unwrap_err().to_string().contains("MiB"));
    }

    #[test]
    fn tags_must_be_unique_and_not_the_root() {
        let mut c = config();
        let share = |tag: &str| Share { tag: tag.into(), host_path: "/x".into(), read_only: true };
        c.shares = vec![share(ROOT_TAG)];
        assert!(c.validate().unwrap_err().to_string().contains("used twice"));
        c.shares = vec![share("a"), share("a")];
        assert!(c.validate().is_err());
        c.shares = vec![share("")];
        assert!(c.validate().is_err());
        c.shares = vec![share("a"), share("b")];
        c.validate().unwrap();
    }

    #[test]
    fn env_must_survive_the_kernel_command_line() {
        let mut c = config();
        c.env = vec![("MOAT_AGENT_LOG".into(), "info".into())];
        c.validate().unwrap();
        assert_eq!(c.env_strings().unwrap()[0].to_str().unwrap(), "MOAT_AGENT_LOG=info");
        c.env = vec![("A".into(), "x\"y".into())];
        assert!(c.validate().unwrap_err().to_string().contains("quote"));
        c.env = vec![("A B".into(), "x".into())];
        assert!(c.validate().is_err());
        c.env = vec![("1A".into(), "x".into())];
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_relative_root_or_empty_init_is_refused() {
        let mut c = config();
        c.root = "rel".into();
        assert!(c.validate().is_err());
        let mut c = config();
        c.init.clear();
        assert!(c.validate().unwrap_err().to_string().contains("init"));
    }

    #[test]
    fn a_vsock_port_is_mapped_once() {
        let mut c = config();
        let port = VsockPort {
            port: 1024,
            socket: "/tmp/a.sock".into(),
            direction: VsockDirection::GuestConnects,
        };
        c.vsock_ports = vec![port.clone(), port];
        assert!(c.validate().unwrap_err().to_string().contains("1024"));
    }

    #[test]
    fn loading_something_that_is_not_libkrunfw_fails_with_dlerror() {
        let err = load_krunfw(Path::new("/nonexistent/libkrunfw.so.5")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/libkrunfw.so.5"), "{err}");
        // A real shared library without krunfw_get_kernel.
        let libc_path = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists());
        if let Some(path) = libc_path {
            let err = load_krunfw(path).unwrap_err();
            assert!(err.to_string().contains("krunfw_get_kernel"), "{err}");
        }
    }

    #[test]
    fn an_invalid_config_fails_before_libkrun_is_touched() {
        let mut c = config();
        c.vcpus = 0;
        assert!(matches!(c.enter(), Err(VmmError::Invalid(_))));
    }

    /// Loads the real libkrunfw when `MOAT_LIBKRUNFW` names one (the vm-host and CI set it).
    #[test]
    #[ignore = "needs MOAT_LIBKRUNFW=/path/to/libkrunfw.so.5"]
    fn the_real_libkrunfw_loads() {
        let path = std::env::var_os("MOAT_LIBKRUNFW").expect("MOAT_LIBKRUNFW is set");
        load_krunfw(Path::new(&path)).unwrap();
    }
}
