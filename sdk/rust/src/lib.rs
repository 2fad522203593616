//! The Rust SDK for writing wagg aggregators: WebAssembly plugins that the
//! wagg host runs once per Kafka partition (ABI v1, `abi/ABI.md`).
//!
//! An aggregator declares the typed input fields it reads (the host decodes
//! them from each record's JSON), its group key columns and its metrics, and
//! folds a batch of records into groups:
//!
//! ```
//! use wagg::{Aggregator, Batch, Error, Groups, Int64Field, Metric, Spec, StringField};
//!
//! pub struct Votes { poll: Int64Field, option: StringField, votes: Metric }
//!
//! impl Aggregator for Votes {
//!     fn define(s: &mut Spec) -> Self {
//!         let poll = s.input_int64("poll_id");
//!         let option = s.input_string("option");
//!         s.key_int64("poll_id");
//!         s.key_string("option");
//!         Votes { poll, option, votes: s.count("votes") }
//!     }
//!     fn aggregate(&mut self, b: &Batch, g: &mut Groups) -> Result<(), Error> {
//!         g.columns(b).int64(b.int64s(self.poll)).string(b.strings(self.option)).count(self.votes);
//!         Ok(())
//!     }
//! }
//!
//! wagg::export!(Votes);
//! ```
//!
//! `Groups::columns` folds a batch a column at a time; `Groups::at` folds a
//! record at a time (`g.at(b.time(i)).int64(polls[i]).string(options.get(i))
//! .add(self.votes, 1)` for each record folds the same), for records that
//! need logic of their own.
//!
//! The SDK keeps the state per window and group, emits the changed groups at
//! each flush, marks closed windows final, and snapshots and restores the
//! state (in the same layout as the Go and C SDKs), so the aggregator holds no
//! state of its own and replays exactly.
//!
//! Build a plugin as a `cdylib` for `wasm32-unknown-unknown` (no imports at
//! all; a panic traps and the host discards the instance):
//!
//! ```text
//! cargo build --release --target wasm32-unknown-unknown
//! ```
//!
//! On the host the same aggregator runs natively through [`Local`], which is
//! how aggregators are unit-tested and benchmarked.

mod batch;
mod columns;
mod engine;
mod groups;
mod json;
mod local;
mod migrate;
mod sketch;
mod spec;

pub use batch::{Batch, Strings};
pub use columns::Columns;
pub use engine::Engine;
pub use groups::{Groups, Key};
pub use local::{BatchBuilder, Local, Row, Value};
pub use migrate::{NewGroup, OldGroup};
pub use spec::{Float64Field, Int64Field, Metric, Spec, StringField, Type, Window, WindowKind};

/// A status code of the ABI (`abi/ABI.md` "Error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BadInput = -1,
    Schema = -2,
    NotReady = -3,
    Aggregate = -4,
    OutputLimit = -5,
}

/// An error with the code the host sees and a message for its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    /// The aggregator's own failure: fails the batch with `ErrAggregate`.
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            code: Code::Aggregate,
            message: message.into(),
        }
    }
    pub(crate) fn bad_input(message: impl Into<String>) -> Error {
        Error {
            code: Code::BadInput,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

/// An aggregator: its declaration and its fold.
pub trait Aggregator: Sized {
    /// Declares input fields, key columns and metrics, in order.
    fn define(spec: &mut Spec) -> Self;
    /// Folds a batch into groups. It must be deterministic: the same batches
    /// in the same order must give the same groups, so a replay emits the
    /// same rows. An error fails the whole batch.
    fn aggregate(&mut self, batch: &Batch, groups: &mut Groups) -> Result<(), Error>;
    /// Converts one group of a snapshot of an older state version that the
    /// spec lists in `Spec::migrates`, as the snapshot is restored: set on
    /// `g` what changes (it starts with the old values of the metrics of
    /// the same name, kind and type, the others empty), and answer false to
    /// drop the group. The group keeps its window, start and key. It must be
    /// deterministic; an error fails the restore (`ErrAggregate`).
    fn migrate(&mut self, old: &OldGroup, g: &mut NewGroup) -> Result<bool, Error> {
        let _ = g;
        Err(Error::new(format!("wagg: the aggregator migrates state version {} but does not implement Aggregator::migrate", old.version())))
    }
}

/// Exports the ABI for an [`Aggregator`] type: use it once, in the plugin's
/// `cdylib` crate. Every export's buffer convention is in `abi/ABI.md`.
#[macro_export]
macro_rules! export {
    ($agg:ty) => {
        #[cfg(target_arch = "wasm32")]
        type __WaggAggregator = $agg;

        #[cfg(target_arch = "wasm32")]
        mod __wagg_exports {
            use $crate::Engine;
            // A plugin instance is single-threaded and serves one partition.
            static mut ENGINE: Option<Engine<super::__WaggAggregator>> = None;

            fn engine() -> &'static mut Engine<super::__WaggAggregator> {
                unsafe {
                    if ENGINE.is_none() {
                        ENGINE = Some(Engine::new());
                    }
                    ENGINE.as_mut().unwrap()
                }
            }

            #[no_mangle]
            pub extern "C" fn _initialize() {}
            #[no_mangle]
            pub extern "C" fn wagg_abi_version_1() {}
            #[no_mangle]
            pub extern "C" fn wagg_input_buffer(size: i32) -> i32 {
                engine().input_buffer(size)
            }
            #[no_mangle]
            pub extern "C" fn wagg_describe() -> i64 {
                engine().export_describe()
            }
            #[no_mangle]
            pub extern "C" fn wagg_init(n: i32) -> i32 {
                engine().export_init(n)
            }
            #[no_mangle]
            pub extern "C" fn wagg_process(n: i32) -> i32 {
                engine().export_process(n)
            }
            #[no_mangle]
            pub extern "C" fn wagg_flush(watermark: i64) -> i64 {
                engine().export_flush(watermark)
            }
            #[no_mangle]
            pub extern "C" fn wagg_snapshot() -> i64 {
                engine().export_snapshot()
            }
            #[no_mangle]
            pub extern "C" fn wagg_restore(n: i32) -> i32 {
                engine().export_restore(n)
            }
            #[no_mangle]
            pub extern "C" fn wagg_last_error() -> i64 {
                engine().export_last_error()
            }
        }
    };
}
