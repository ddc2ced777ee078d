//! CUDA graphs for steps that repeat (`Backend::repeated`: the decode step).
//! A decode step is a few hundred small launches; issued one by one, the
//! CPU's launch cost rather than the GPU sets its pace. So the step is
//! captured into a graph once and replayed after that.
//!
//! Every step still runs its host code, in one of three passes:
//! - **record** (eager): the step runs as usual, noting each launch and
//!   cuBLAS call (function, grid and argument bits) and writing its id
//!   arrays (positions, lengths, tokens) into one device arena at offsets in
//!   call order instead of separate uploads;
//! - **capture**: once two record passes in a row noted the same calls (the
//!   first may make buffers and kept copies, the second shows that it made
//!   none), the next step first runs as a check pass (below) to confirm that
//!   it notes the same calls too (it may belong to another loop, on other
//!   buffers), then runs again under stream capture, its ids staged on the
//!   host at the same offsets; the graph is instantiated, the staged ids go
//!   up in one copy, and the graph runs;
//! - **check**: every later step launches nothing. It notes its calls and
//!   stages its ids; if the notes equal the graph's, one copy and one graph
//!   launch do the step. Any difference (a buffer that moved, a shape that
//!   changed) drops the graph and runs the step as a record pass.
//!
//! So a graph only ever runs the calls the host code would have issued, with
//! the same arguments: ids are the only inputs that change, and they live in
//! the arena. A captured step must not allocate, which the matching passes
//! before it show (the emulated driver refuses it outright).

use super::Cuda;
use anyhow::{Context, Result};
use cudarc::driver::{sys, CudaGraph, CudaSlice, DevicePtr, LaunchConfig};
use std::sync::atomic::Ordering;

/// One launch or cuBLAS call as a pass notes it: what runs, its shape, and
/// its arguments folded into one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    what: u64,
    dims: [u32; 7],
    args: u64,
}

impl Call {
    pub(crate) fn launch(function: sys::CUfunction, cfg: &LaunchConfig) -> Call {
        let (g, b) = (cfg.grid_dim, cfg.block_dim);
        Call { what: function as u64, dims: [g.0, g.1, g.2, b.0, b.1, b.2, cfg.shared_mem_bytes], args: FOLD_START }
    }

    /// A cuBLAS product (`what` 0: no kernel function has that address).
    pub(crate) fn gemm(m: usize, n: usize, k: usize, flags: u32) -> Call {
        Call { what: 0, dims: [m as u32, n as u32, k as u32, flags, 0, 0, 0], args: FOLD_START }
    }

    pub(crate) fn arg(&mut self, a: &impl ArgBits) {
        self.args = (self.args ^ a.bits()).wrapping_mul(FOLD_PRIME);
    }
}

/// FNV-1a's constants. Each fold step is a bijection of the running value,
/// so one argument that differs always changes the fold; several could
/// cancel only by a 2⁻⁶⁴ chance.
const FOLD_START: u64 = 0xcbf2_9ce4_8422_2325;
const FOLD_PRIME: u64 = 0x0100_0000_01b3;

/// A kernel argument's bits: a device address or a scalar's value.
pub(crate) trait ArgBits {
    fn bits(&self) -> u64;
}

impl<T> ArgBits for CudaSlice<T> {
    fn bits(&self) -> u64 {
        // Event tracking is off (Cuda::new), so asking for the address records nothing.
        self.device_ptr(self.stream()).0
    }
}

macro_rules! scalar_bits {
    ($($t:ty => $f:expr),+) => {$(
        impl ArgBits for $t {
            fn bits(&self) -> u64 {
                $f(*self)
            }
        }
    )+};
}
scalar_bits!(i32 => |x: i32| x as u32 as u64, u32 => |x: u32| x as u64, i64 => |x: i64| x as u64, u64 => |x: u64| x, f32 => |x: f32| x.to_bits() as u64);

impl<T: ArgBits + ?Sized> ArgBits for &T {
    fn bits(&self) -> u64 {
        (**self).bits()
    }
}

impl<T: ArgBits + ?Sized> ArgBits for &mut T {
    fn bits(&self) -> u64 {
        (**self).bits()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Record,
    Capture,
    Check,
}

/// What a pass noted.
#[derive(Default)]
struct Notes {
    calls: Vec<Call>,
    /// Capture and check: the ids, at their arena offsets (a record pass
    /// writes them to the arena at once).
    staged: Vec<u32>,
    /// Arena words the ids take.
    used: usize,
}

/// The pass in progress, and the arena it writes ids into.
pub(crate) struct Pass {
    kind: Kind,
    notes: Notes,
    arena: CudaSlice<u32>,
}

/// The captured graph, the notes it must match, and how often it ran.
struct Recorded {
    graph: CudaGraph,
    notes: Notes,
    runs: u64,
}

/// Between steps: the graph, the arena its ids live in, and the last record
/// pass's calls (when its ids fit the arena).
#[derive(Default)]
pub(crate) struct Graphs {
    recorded: Option<Recorded>,
    last_record: Option<Vec<Call>>,
    /// The last two record passes noted the same calls: the next step may capture.
    ready: bool,
    arena: Option<CudaSlice<u32>>,
    /// Graphs in a row dropped after only a few runs: a step that keeps
    /// changing gains nothing from capture, so three of them turn graphs off.
    short_lived: u32,
    off: bool,
    /// Steps a graph ran.
    replays: u64,
}

/// A graph dropped after fewer runs than this counts as short-lived.
const SHORT_LIVED_RUNS: u64 = 8;
/// Id arena words at least (the decode step of a 64-row batch needs ~25K).
const ARENA_MIN: usize = 1 << 16;

/// Arena words an id array takes: 16-byte aligned, like any upload.
fn arena_words(len: usize) -> usize {
    len.next_multiple_of(4).max(4)
}

impl Cuda {
    /// Turns graph capture of repeated steps on (the default) or off (for
    /// comparison: `bench generate --no-graphs`).
    pub fn set_graphs(&self, on: bool) {
        let mut g = self.graphs.lock().expect("graph state lock");
        (g.off, g.recorded, g.last_record, g.ready, g.short_lived) = (!on, None, None, false, 0);
    }

    /// Whether repeated steps may run as graphs (`set_graphs`, or the
    /// `VUL2SAFE_CUDA_GRAPHS` environment variable; profiling also turns them off).
    pub fn graphs_enabled(&self) -> bool {
        !self.graphs.lock().expect("graph state lock").off
    }

    /// Steps that ran as a graph launch since the backend opened.
    pub fn graph_replays(&self) -> u64 {
        self.graphs.lock().expect("graph state lock").replays
    }

    /// Whether a repeated step's pass is in progress.
    pub(crate) fn in_pass(&self) -> bool {
        self.in_pass.load(Ordering::Relaxed)
    }

    /// Whether work no pass notes may run now (gemm_tune.rs's timing runs):
    /// outside a pass, or in a record pass, which runs eagerly.
    pub(crate) fn eager(&self) -> bool {
        !self.in_pass() || self.pass.lock().expect("pass lock").as_ref().is_some_and(|p| p.kind == Kind::Record)
    }

    /// A launch or cuBLAS call's note, when a pass is in progress.
    pub(crate) fn note(&self, call: impl FnOnce() -> Call) -> Option<Call> {
        self.in_pass().then(call)
    }

    /// Files `note` with the pass; whether to issue the call (a check pass only notes).
    pub(crate) fn issue(&self, note: Option<Call>) -> bool {
        let Some(call) = note else { return true };
        let mut guard = self.pass.lock().expect("pass lock");
        let pass = guard.as_mut().expect("a note outside a pass");
        pass.notes.calls.push(call);
        pass.kind != Kind::Check
    }

    /// The device address of `host`'s ids in a pass's arena, written there
    /// (record) or staged (capture, check); None outside a pass, or when the
    /// arena is too small (such a pass cannot be replayed).
    pub(crate) fn arena_ids(&self, host: &[u32]) -> Option<u64> {
        if !self.in_pass() {
            return None;
        }
        let mut guard = self.pass.lock().expect("pass lock");
        let pass = guard.as_mut().expect("in a pass");
        let at = pass.notes.used;
        pass.notes.used += arena_words(host.len());
        if pass.notes.used > pass.arena.len() {
            return None;
        }
        let addr = self.ptr(&pass.arena) + 4 * at as u64;
        if pass.kind != Kind::Record {
            pass.notes.staged.extend_from_slice(host);
            pass.notes.staged.resize(pass.notes.used, 0);
        } else if !host.is_empty() {
            // Stream-ordered after the work that last read this range.
            self.stream.memcpy_htod(host, &mut pass.arena.slice_mut(at..at + host.len())).expect("uploading ids");
        }
        Some(addr)
    }

    /// `Backend::repeated`.
    pub(crate) fn run_repeated(&self, step: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        let mut g = self.graphs.lock().expect("graph state lock");
        if g.off || self.profiling() {
            return step();
        }
        self.repeated_with(&mut g, step)
    }

    fn repeated_with(&self, g: &mut Graphs, step: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        if let Some(mut rec) = g.recorded.take() {
            let (notes, r) = self.in_pass_of(Kind::Check, g, step);
            r?;
            if notes.used == rec.notes.used && notes.calls == rec.notes.calls {
                self.upload_staged(g, &notes.staged);
                rec.graph.launch().context("launching the step's graph")?;
                rec.runs += 1;
                g.replays += 1;
                g.recorded = Some(rec);
                return Ok(());
            }
            g.short_lived = if rec.runs < SHORT_LIVED_RUNS { g.short_lived + 1 } else { 0 };
            if g.short_lived >= 3 {
                g.off = true;
                eprintln!("CUDA graphs off: the repeated step changed three times within {SHORT_LIVED_RUNS} steps of its capture");
            }
        } else if std::mem::take(&mut g.ready) && self.notes_as_last_record(g, step)? {
            g.last_record = None;
            self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).context("starting stream capture")?;
            let (notes, r) = self.in_pass_of(Kind::Capture, g, step);
            let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
            r?;
            match graph {
                Ok(Some(graph)) => {
                    self.upload_staged(g, &notes.staged);
                    graph.launch().context("launching the step's graph")?;
                    g.replays += 1;
                    g.recorded = Some(Recorded { graph, notes, runs: 1 });
                    return Ok(());
                }
                // Nothing ran: the step runs eagerly below, and from now on.
                failed => {
                    g.off = true;
                    eprintln!("CUDA graphs off: capturing the repeated step failed ({:?})", failed.err());
                }
            }
        }
        let (notes, r) = self.in_pass_of(Kind::Record, g, step);
        r?;
        let room = g.arena.as_ref().map_or(0, CudaSlice::len);
        if notes.used <= room {
            g.ready = g.last_record.as_ref() == Some(&notes.calls);
            g.last_record = Some(notes.calls);
        } else {
            // The next step records again, into an arena that fits.
            g.arena = Some(self.id_arena(notes.used));
            g.last_record = None;
        }
        Ok(())
    }

    /// Whether `step`, run as a check pass (launching nothing), notes what the
    /// last record pass did. The last two record passes may belong to an
    /// earlier loop, whose buffers this step does not use: then capturing it
    /// would allocate its buffers' bf16 copies inside the graph.
    fn notes_as_last_record(&self, g: &mut Graphs, step: &mut dyn FnMut() -> Result<()>) -> Result<bool> {
        let (notes, r) = self.in_pass_of(Kind::Check, g, step);
        r?;
        Ok(g.last_record.as_ref() == Some(&notes.calls))
    }

    /// Runs `step` as one pass of `kind`, over `g`'s arena (made on first use).
    fn in_pass_of(&self, kind: Kind, g: &mut Graphs, step: &mut dyn FnMut() -> Result<()>) -> (Notes, Result<()>) {
        let arena = g.arena.take().unwrap_or_else(|| self.id_arena(ARENA_MIN));
        *self.pass.lock().expect("pass lock") = Some(Pass { kind, notes: Notes::default(), arena });
        self.in_pass.store(true, Ordering::Relaxed);
        let r = step();
        self.in_pass.store(false, Ordering::Relaxed);
        let Pass { notes, arena, .. } = self.pass.lock().expect("pass lock").take().expect("the pass");
        g.arena = Some(arena);
        (notes, r)
    }

    /// A capture or check pass's staged ids, into the arena in one copy.
    fn upload_staged(&self, g: &mut Graphs, staged: &[u32]) {
        if staged.is_empty() {
            return;
        }
        let arena = g.arena.as_mut().expect("the pass's arena");
        self.stream.memcpy_htod(staged, &mut arena.slice_mut(0..staged.len())).expect("uploading staged ids");
    }

    fn id_arena(&self, words: usize) -> CudaSlice<u32> {
        self.stream.alloc_zeros(words.max(ARENA_MIN)).expect("allocating the id arena")
    }
}
