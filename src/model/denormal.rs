//! Subnormal floats, flushed to zero.
//!
//! Training with weight decay shrinks unused weights and activations towards zero until some
//! of them become subnormal (below 1.2e-38 in f32). x86 and ARM cores handle those in
//! microcode, many times slower than normal numbers: on unsw-reconnaissance, seed 43 took
//! 45 s to fit instead of 14 s, and its model then scored 25 times slower. Two measures,
//! because either alone leaves a hole:
//!
//! - [`FlushGuard`] sets the core's flush-to-zero and denormals-are-zero modes for the thread
//!   that trains or scores, and restores the previous mode when dropped, so a library caller's
//!   thread is left as it was. The binary also sets the modes in `main` and in every thread
//!   of rayon's global pool (burn's `flex` backend runs large operations there).
//! - [`flush_subnormals`] zeroes subnormal weights when a scorer copies them, so a model file
//!   trained elsewhere cannot slow the sensor down.
//!
//! The modes change results only where a subnormal would have appeared (it becomes zero), so
//! a seed still gives one model on a given machine and backend. A training run's trajectory
//! can change with them (that seed: AUC-PR 0.696 without, 0.719 with; within the spread of
//! seeds on that table).

/// Flush-to-zero (bit 15) and denormals-are-zero (bit 6) in the x86 MXCSR register.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
const X86_FTZ_DAZ: u32 = 0x8040;

/// Flush-to-zero (bit 24) in the AArch64 FPCR register.
#[cfg(target_arch = "aarch64")]
const ARM_FZ: u64 = 1 << 24;

#[cfg(target_arch = "x86")]
use std::arch::x86 as arch;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64 as arch;

/// The calling thread's floating-point control word.
#[allow(unsafe_code)] // reading a control register: no intrinsic without `unsafe`
fn control_word() -> u64 {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        // The intrinsics are deprecated in favour of inline assembly; they remain correct
        // for reading and writing the whole register, which is all this does.
        #[allow(deprecated)]
        // SAFETY: reading MXCSR has no side effect; SSE is baseline on x86_64 and every
        // x86 target Rust supports with std.
        unsafe {
            arch::_mm_getcsr() as u64
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // SAFETY: reading FPCR has no side effect.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) v) };
        v
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

#[allow(unsafe_code)] // writing a control register: no intrinsic without `unsafe`
fn set_control_word(_v: u64) {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    #[allow(deprecated)]
    // SAFETY: only rounding/flush/exception-mask bits that `control_word` returned, or those
    // plus FTZ/DAZ, are written; exceptions stay masked as they were.
    unsafe {
        arch::_mm_setcsr(_v as u32)
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above, a value read from FPCR with at most the FZ bit added.
    unsafe {
        std::arch::asm!("msr fpcr, {}", in(reg) _v)
    }
}

fn with_flush(v: u64) -> u64 {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        v | X86_FTZ_DAZ as u64
    }
    #[cfg(target_arch = "aarch64")]
    {
        v | ARM_FZ
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        v
    }
}

/// Sets flush-to-zero for the rest of the calling thread's life (the binary's `main` and its
/// pool threads; library code uses [`FlushGuard`]).
pub fn flush_on_this_thread() {
    set_control_word(with_flush(control_word()));
}

/// Flush-to-zero on the calling thread until dropped; then the previous mode is back.
#[must_use = "the mode is restored when the guard is dropped"]
pub struct FlushGuard {
    previous: u64,
    /// The control word is per thread: the guard must be dropped where it was made.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl FlushGuard {
    pub fn new() -> FlushGuard {
        let previous = control_word();
        set_control_word(with_flush(previous));
        FlushGuard { previous, _not_send: std::marker::PhantomData }
    }
}

impl Default for FlushGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        set_control_word(self.previous);
    }
}

/// Replaces every subnormal value with zero of the same sign.
pub fn flush_subnormals(values: &mut [f32]) {
    for v in values {
        if v.is_subnormal() {
            *v = 0.0f32.copysign(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// The smallest normal f32 halved: subnormal unless flushed.
    fn halved_min() -> f32 {
        black_box(f32::MIN_POSITIVE) * black_box(0.5)
    }

    #[test]
    #[cfg(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64"))]
    fn guard_flushes_and_restores() {
        assert!(halved_min().is_subnormal(), "the test thread starts without flush-to-zero");
        {
            let _g = FlushGuard::new();
            assert_eq!(halved_min(), 0.0);
            // Nested guards restore their own previous mode.
            {
                let _inner = FlushGuard::new();
                assert_eq!(halved_min(), 0.0);
            }
            assert_eq!(halved_min(), 0.0);
        }
        assert!(halved_min().is_subnormal(), "the mode is restored on drop");
    }

    #[test]
    fn subnormal_weights_become_zero() {
        let tiny = f32::from_bits(1); // the smallest positive subnormal
        let mut w = [1.0, -tiny, tiny, f32::MIN_POSITIVE, 0.0, -2.5e-39];
        flush_subnormals(&mut w);
        assert_eq!(w[..3], [1.0, 0.0, 0.0]);
        assert!(w[1].is_sign_negative());
        assert_eq!(w[3], f32::MIN_POSITIVE, "the smallest normal stays");
        assert_eq!(w[5], 0.0);
        assert!(w.iter().all(|v| !v.is_subnormal()));
    }
}
