//! The Environment Abstraction Layer: initialisation, clean-up, thread registration, errors.
//!
//! DPDK allows one `rte_eal_init` per process, and nothing after `rte_eal_cleanup`; [`Eal`]
//! enforces the first with a process-wide flag and the second by consuming itself in
//! [`Eal::cleanup`]. Worker threads that are not EAL lcores call [`register_thread`] so they
//! get an lcore id (the mempool's per-lcore caches need one); the returned guard unregisters
//! on drop.
//!
//! Errors quote `rte_strerror(rte_errno)`, never a bare code.

use std::ffi::{c_char, c_int, CStr, CString};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ffi;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Error from EAL set-up.
#[derive(Debug)]
pub enum EalError {
    /// `rte_eal_init` failed.
    Init {
        /// The arguments as passed.
        args: String,
        /// `rte_strerror(rte_errno)`.
        reason: String,
    },
    /// `rte_eal_init` was already called in this process.
    AlreadyInitialised,
    /// An argument holds a NUL byte.
    BadArgument(String),
    /// `rte_thread_register` failed.
    Register {
        /// `rte_strerror(rte_errno)`.
        reason: String,
    },
}

impl std::fmt::Display for EalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Init { args, reason } => {
                write!(f, "cannot initialise the DPDK EAL with `{args}`: {reason}")
            }
            Self::AlreadyInitialised => f.write_str(
                "the DPDK EAL is already initialised in this process (DPDK allows it once)",
            ),
            Self::BadArgument(a) => write!(f, "EAL argument {a:?} contains a NUL byte"),
            Self::Register { reason } => {
                write!(f, "cannot register the thread with the DPDK EAL: {reason}")
            }
        }
    }
}

impl std::error::Error for EalError {}

/// `rte_strerror(code)` as text (`code` positive, as in `rte_errno`, or negative, as ethdev
/// functions return it).
pub(crate) fn strerror(code: c_int) -> String {
    // SAFETY: rte_strerror accepts any value and returns a pointer to a NUL-terminated
    // string, static or in a per-thread buffer that stays valid until the next call on this
    // thread; it is copied before anything else runs here.
    let s = unsafe { CStr::from_ptr(ffi::rte_strerror(code.abs())) };
    format!("{} (errno {})", s.to_string_lossy(), code.abs())
}

/// `rte_strerror(rte_errno)` for the last failed DPDK call on this thread.
pub(crate) fn last_error() -> String {
    // SAFETY: reads the calling thread's rte_errno (a thread-local int).
    strerror(unsafe { ffi::spray_errno() })
}

/// The initialised EAL. `!Send`: set-up and clean-up happen on the main thread.
#[derive(Debug)]
pub struct Eal {
    cleaned: bool,
    /// EAL's runtime folder (`/var/run/dpdk/<file prefix>`), removed after clean-up: EAL
    /// leaves it behind, one per process with its own prefix (140 had piled up here from
    /// benchmark runs).
    runtime_dir: Option<std::path::PathBuf>,
    _main_thread: PhantomData<*const ()>,
}

impl Eal {
    /// Calls `rte_eal_init` with `args` (without the program name, which is added).
    ///
    /// # Errors
    /// When EAL refuses the arguments or cannot set up (hugepages, file prefix, devices), or
    /// when it was already initialised in this process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Self, EalError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(EalError::AlreadyInitialised);
        }
        let text: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let mut owned = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once("spray").chain(text.iter().copied()) {
            owned.push(CString::new(a).map_err(|_| EalError::BadArgument(a.to_owned()))?);
        }
        // EAL may keep pointers into argv (and permutes it), so argv lives for the whole
        // process: leaked once, on purpose.
        let argv: &'static mut [*mut c_char] = Box::leak(
            owned
                .into_iter()
                .map(CString::into_raw)
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let argc = c_int::try_from(argv.len()).map_err(|_| EalError::BadArgument("argc".into()))?;
        // SAFETY: argv holds argc valid, NUL-terminated, writable strings that are never
        // freed; this is the process's only call (checked by INITIALISED above).
        let r = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if r < 0 {
            return Err(EalError::Init {
                args: text.join(" "),
                reason: last_error(),
            });
        }
        // SAFETY: EAL is initialised; the result is a NUL-terminated path in EAL's static
        // storage, copied at once.
        let dir = unsafe { ffi::rte_eal_get_runtime_dir() };
        let runtime_dir = (!dir.is_null()).then(|| {
            // SAFETY: non-null, NUL-terminated (above).
            let s = unsafe { CStr::from_ptr(dir) };
            std::path::PathBuf::from(s.to_string_lossy().into_owned())
        });
        Ok(Self {
            cleaned: false,
            runtime_dir,
            _main_thread: PhantomData,
        })
    }

    /// The NUMA socket of the calling thread.
    pub fn socket_id(&self) -> c_int {
        // SAFETY: EAL is initialised (self exists); rte_socket_id reads a per-thread value.
        let s = unsafe { ffi::rte_socket_id() };
        c_int::try_from(s).unwrap_or(ffi::SOCKET_ID_ANY)
    }

    /// Ethernet ports EAL found (PCI devices on the allow-list, and vdevs).
    pub(crate) fn port_count(&self) -> u16 {
        // SAFETY: EAL is initialised.
        unsafe { ffi::rte_eth_dev_count_avail() }
    }

    /// Releases EAL's resources (hugepage files, the runtime directory). Every port must be
    /// closed and every registered thread unregistered first.
    ///
    /// # Errors
    /// `rte_strerror` of the failure.
    pub fn cleanup(mut self) -> Result<(), String> {
        self.cleaned = true;
        // SAFETY: EAL is initialised and, `self` being consumed, no Eal is left to use it.
        let r = unsafe { ffi::rte_eal_cleanup() };
        self.remove_runtime_dir();
        if r < 0 {
            Err(strerror(r))
        } else {
            Ok(())
        }
    }
}

impl Eal {
    /// Removes EAL's runtime folder once EAL is cleaned up. Spray is always the primary
    /// process of its file prefix (EAL refuses a second primary), so nothing else uses it.
    fn remove_runtime_dir(&mut self) {
        if let Some(dir) = self.runtime_dir.take() {
            // Best effort: a leftover folder is clutter, not an error.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        if !self.cleaned {
            // SAFETY: as in `cleanup`; nothing can use EAL through this handle afterwards.
            unsafe { ffi::rte_eal_cleanup() };
            self.remove_runtime_dir();
        }
    }
}

/// A non-EAL thread registered with EAL; unregisters on drop. `!Send`: it belongs to the
/// thread that registered.
#[derive(Debug)]
pub struct LcoreGuard {
    lcore: u32,
    _thread: PhantomData<*const ()>,
}

impl LcoreGuard {
    /// The lcore id EAL gave this thread.
    pub fn lcore_id(&self) -> u32 {
        self.lcore
    }
}

/// Registers the calling thread with EAL (after pinning it, so EAL records its cpuset).
///
/// # Errors
/// When EAL has no free lcore slot, or is not initialised.
pub fn register_thread() -> Result<LcoreGuard, EalError> {
    if !INITIALISED.load(Ordering::SeqCst) {
        return Err(EalError::Register {
            reason: "EAL is not initialised".into(),
        });
    }
    // SAFETY: EAL is initialised; registering the current thread has no other precondition.
    if unsafe { ffi::rte_thread_register() } < 0 {
        return Err(EalError::Register {
            reason: last_error(),
        });
    }
    Ok(LcoreGuard {
        // SAFETY: reads this thread's lcore id, just assigned.
        lcore: unsafe { ffi::spray_lcore_id() },
        _thread: PhantomData,
    })
}

impl Drop for LcoreGuard {
    fn drop(&mut self) {
        // SAFETY: this thread registered itself (the guard is !Send, so we are on it).
        unsafe { ffi::rte_thread_unregister() }
    }
}
