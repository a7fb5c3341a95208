//! CPU scheduling of the runner's threads. On two cores an `npm install`,
//! the kernel's writeback, the storage work and the threads that carry a
//! keystroke all want the CPU at once; a keystroke's echo wakes several
//! threads in turn, and each wake-up must run at once, not at the next
//! scheduler tick (4 ms at 250 Hz).

/// The slice, in nanoseconds, that threads on a keystroke's way ask for:
/// the shortest Linux grants. A waking thread whose slice is shorter than
/// the running one's preempts it at once; with the default slice it waits
/// until the running thread has used its own up, which is checked at the
/// next tick.
pub const LATENCY_SLICE_NS: u64 = 100_000;

/// Asks for [`LATENCY_SLICE_NS`] for the thread `tid` (0: the calling
/// one; a single-threaded process's pid), keeping its nice value, without
/// passing it on (`SCHED_FLAG_RESET_ON_FORK`): what it starts (the shell's
/// programs, new threads) gets the default.
pub fn shorten_slice(tid: libc::pid_t) {
    // SAFETY: sched_attr is plain data; all zeroes is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    // The attributes are set whole: a nice of 0 here would raise a niced
    // runner's thread (or fail without the right to).
    // SAFETY: no memory-safety preconditions; errno is read right after.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: as above.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    if nice == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0) {
        tracing::debug!("cannot read a thread's nice value: {}", std::io::Error::last_os_error());
        return;
    }
    attr.sched_nice = nice;
    attr.sched_flags = libc::SCHED_FLAG_RESET_ON_FORK as u64;
    attr.sched_runtime = LATENCY_SLICE_NS;
    // SAFETY: a valid sched_attr of the size it says.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr as *const libc::sched_attr, 0) };
    if set != 0 {
        // Before Linux 6.12 a normal thread cannot choose its slice.
        tracing::debug!("cannot shorten a thread's slice: {}", std::io::Error::last_os_error());
    }
}

/// Makes the thread `tid` (0: the calling one) run only when nothing else
/// of the runner wants its CPU (`SCHED_IDLE`), for threads that only ever
/// do background storage work. A nice value is not enough: a running
/// nice-10 thread keeps its slice when a keystroke's thread wakes, and the
/// keystroke then waits for the next tick, often several in a row behind
/// several such threads, while an idle-class thread is preempted at once.
/// Alone on the CPU it runs at full speed; against the user's own CPU-bound
/// programs it gets little, which delays only the backlog (clients' saves
/// have their own lane, and the final flush runs on the main runtime).
/// Without privileges this cannot be undone.
pub fn make_idle(tid: libc::pid_t) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param; no memory-safety preconditions.
    if unsafe { libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) } != 0 {
        tracing::debug!(
            "cannot lower a storage thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
