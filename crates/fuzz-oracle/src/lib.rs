//! What Ferry's fuzz targets share: the counting allocator every target runs under (the
//! amplification oracle) and, for async parsers, a runtime.

/// The counting allocator every target runs under: the amplification oracle.
#[global_allocator]
static HEAP: peak_alloc::PeakAlloc = peak_alloc::PeakAlloc;

/// Runs `f` on an input of `len` bytes and fails if its peak heap passes `budget` bytes.
pub fn within_budget(len: usize, budget: usize, f: impl FnOnce()) {
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    f();
    let peak = HEAP.peak_usage().saturating_sub(before);
    assert!(peak <= budget, "{peak} heap bytes for {len} input bytes (budget {budget})");
    report_worst(len, peak);
}

/// Prints each new worst ratio of peak heap to input size, for inputs of 1 KiB or more
/// (below that the constant part of a budget dominates): the figure a run is summed up by.
fn report_worst(len: usize, peak: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WORST_MILLI: AtomicUsize = AtomicUsize::new(0);
    if len < 1024 {
        return;
    }
    let milli = peak.saturating_mul(1000) / len;
    if milli > WORST_MILLI.fetch_max(milli, Ordering::Relaxed) {
        eprintln!(
            "worst amplification so far: {:.1} heap bytes per input byte ({peak} for {len})",
            milli as f64 / 1000.0
        );
    }
}

#[cfg(feature = "runtime")]
/// One current-thread runtime for every input, its clock paused (timers fire as soon as
/// nothing else can run), made before any input is measured.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}
