//! Every `unsafe` call of this crate: libkrun's C ABI (linked in from the `libkrun` crate) and
//! `dlopen` of libkrunfw. Each wrapper takes Rust types, keeps the C strings alive for the call,
//! and turns libkrun's negative-errno returns into [`Errno`]s.

use std::ffi::{CStr, CString, c_char};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A negative return of a libkrun call, as a positive errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// libkrun reads string arrays (`krun_set_env`, `krun_set_exec`) as a slice of this many
/// pointers, stopping at the first null; our arrays are padded to this length so that slice
/// never reaches past our allocation.
const LIBKRUN_MAX_ARGS: usize = 4096;

fn check(ret: i32) -> Result<i32, Errno> {
    if ret < 0 { Err(Errno(-ret)) } else { Ok(ret) }
}

/// A path as a C string; `None` when it holds a NUL byte.
pub(crate) fn path_cstring(path: &Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}

/// A null-terminated array of C string pointers, padded with nulls to [`LIBKRUN_MAX_ARGS`]. The
/// pointers borrow `strings`, which must outlive every use of the array.
fn pointer_array(strings: &[CString]) -> Vec<*const c_char> {
    let mut array: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    array.resize(LIBKRUN_MAX_ARGS.max(strings.len() + 1), std::ptr::null());
    array
}

/// Opens `path` with `dlopen(RTLD_NOW | RTLD_GLOBAL)` and checks it exports
/// `krunfw_get_kernel`. The handle is never closed: once loaded, libkrun's own
/// `dlopen("libkrunfw.so.5")` finds this copy by its soname.
pub(crate) fn load_krunfw(path: &Path) -> Result<(), String> {
    let c_path = path_cstring(path).ok_or_else(|| "the path holds a NUL byte".to_owned())?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call. Loading a
    // library runs its constructors; libkrunfw is a data-only library (a kernel image and
    // accessor functions) with no constructors of consequence.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        return Err(dlerror_text());
    }
    // SAFETY: `handle` is a live handle from `dlopen` above and the symbol name is a valid
    // NUL-terminated string. The result is only compared with null, never called here.
    let symbol = unsafe { libc::dlsym(handle, c"krunfw_get_kernel".as_ptr()) };
    if symbol.is_null() {
        return Err("it does not export krunfw_get_kernel (not a libkrunfw build)".to_owned());
    }
    Ok(())
}

fn dlerror_text() -> String {
    // SAFETY: `dlerror` returns either null or a pointer to a NUL-terminated string owned by the
    // C library, valid until the next dl* call on this thread; it is copied at once.
    let text = unsafe { libc::dlerror() };
    if text.is_null() {
        return "dlopen failed".to_owned();
    }
    // SAFETY: non-null, NUL-terminated, and not freed before this copy (see above).
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// `krun_set_log_level`: libkrun's own log (VMM errors) to stderr at `level` (0 off .. 5 trace).
/// libkrun installs a global logger: call at most once per process.
pub(crate) fn set_log_level(level: u32) -> Result<(), Errno> {
    check(krun::krun_set_log_level(level)).map(drop)
}

/// `krun_create_ctx`.
pub(crate) fn create_ctx() -> Result<u32, Errno> {
    let id = check(krun::krun_create_ctx())?;
    u32::try_from(id).map_err(|_| Errno(libc::EINVAL))
}

/// `krun_free_ctx`.
pub(crate) fn free_ctx(ctx: u32) {
    let _ = krun::krun_free_ctx(ctx);
}

/// `krun_set_vm_config`.
pub(crate) fn set_vm_config(ctx: u32, vcpus: u8, memory_mib: u32) -> Result<(), Errno> {
    check(krun::krun_set_vm_config(ctx, vcpus, memory_mib)).map(drop)
}

/// `krun_add_virtiofs3`: shares `path` under `tag` (the tag `/dev/root` is the guest's root).
pub(crate) fn add_virtiofs(
    ctx: u32,
    tag: &CStr,
    path: &CStr,
    read_only: bool,
) -> Result<(), Errno> {
    // SAFETY: both pointers are valid NUL-terminated strings for the call; libkrun copies them
    // into owned Strings before returning. A shm size of 0 means "no DAX window".
    check(unsafe { krun::krun_add_virtiofs3(ctx, tag.as_ptr(), path.as_ptr(), 0, read_only) })
        .map(drop)
}

/// `krun_fs_add_overlay_file`: serves `data` as the file `path` inside the share `tag`, without
/// touching the host directory. `data` is `'static` because libkrun keeps the pointer for the
/// life of the VM.
pub(crate) fn fs_add_overlay_file(
    ctx: u32,
    tag: &CStr,
    path: &CStr,
    data: &'static [u8],
    mode: u32,
) -> Result<(), Errno> {
    // SAFETY: `tag` and `path` are valid NUL-terminated strings for the call (libkrun copies
    // them); `data` is valid for `data.len()` bytes for the rest of the process, which is what
    // libkrun requires of it.
    check(unsafe {
        krun::krun_fs_add_overlay_file(
            ctx,
            tag.as_ptr(),
            path.as_ptr(),
            data.as_ptr(),
            data.len(),
            mode,
            false,
        )
    })
    .map(drop)
}

/// libkrun's `KRUN_TSI_HIJACK_INET`: the guest's AF_INET/AF_INET6 sockets are proxied by the VMM.
const TSI_HIJACK_INET: u32 = 1;

/// `krun_disable_implicit_vsock` then `krun_add_vsock`: a vsock device with TSI for INET sockets
/// when `tsi_inet` (the guest's INET sockets become sockets of this process: libkrun adds
/// `tsi_hijack` to the kernel command line), else with no TSI at all (the guest has no network).
/// Unix-socket hijacking is never enabled, and libkrun refuses a guest's unix proxy request
/// without it.
pub(crate) fn add_vsock(ctx: u32, tsi_inet: bool) -> Result<(), Errno> {
    check(krun::krun_disable_implicit_vsock(ctx))?;
    let features = if tsi_inet { TSI_HIJACK_INET } else { 0 };
    check(krun::krun_add_vsock(ctx, features)).map(drop)
}

/// `krun_add_vsock_port2`. With `listen` false the guest connects to `port` and libkrun connects
/// that to the unix socket at `socket` (which the host listens on); with `listen` true libkrun
/// listens on `socket` and host connections reach a guest listening on `port`.
pub(crate) fn add_vsock_port(
    ctx: u32,
    port: u32,
    socket: &CStr,
    listen: bool,
) -> Result<(), Errno> {
    // SAFETY: `socket` is a valid NUL-terminated string for the call; libkrun copies it.
    check(unsafe { krun::krun_add_vsock_port2(ctx, port, socket.as_ptr(), listen) }).map(drop)
}

/// `krun_set_console_output`: the guest console (hvc0) is appended to `path`.
pub(crate) fn set_console_output(ctx: u32, path: &CStr) -> Result<(), Errno> {
    // SAFETY: `path` is a valid NUL-terminated string for the call; libkrun copies it.
    check(unsafe { krun::krun_set_console_output(ctx, path.as_ptr()) }).map(drop)
}

/// `krun_set_env`: exactly `env` (`KEY=VALUE` strings), never the host's environment.
pub(crate) fn set_env(ctx: u32, env: &[CString]) -> Result<(), Errno> {
    let array = pointer_array(env);
    // SAFETY: `array` is null-terminated, LIBKRUN_MAX_ARGS long (libkrun views that many
    // pointers), and each non-null entry points into `env`, alive for the call. libkrun copies
    // the strings.
    check(unsafe { krun::krun_set_env(ctx, array.as_ptr()) }).map(drop)
}

/// `krun_start_enter`: returns only on failure (a negative errno). On success libkrun runs the
/// VM on this thread and ends the process with `_exit` when the guest powers off.
pub(crate) fn start_enter(ctx: u32) -> Errno {
    match check(krun::krun_start_enter(ctx)) {
        Err(errno) => errno,
        Ok(_) => Errno(libc::EIO),
    }
}
