//! Record the traffic on some patterns to a file, and play it back — to
//! reproduce production traffic in a test or on a laptop.
//!
//! ```toml
//! [module.record]
//! patterns = ["orders.#", "payments.#"]
//! file = "traffic.jsonl"
//!
//! [module.playback]
//! file = "traffic.jsonl"
//! pace = "recorded"   # or "fast"
//! speed = 10.0        # with "recorded": ten times faster than it happened
//! ```
//!
//! A recording is a sequence of self-delimiting records — topic, time
//! (microseconds since the Unix epoch) and payload — as JSON lines
//! (`format = "json-lines"`, the default) or as a CBOR sequence
//! (`format = "cbor"`). See [`Entry`].
//!
//! ```
//! use telamon_module_record::{Entry, Format, Reader, Writer};
//!
//! let mut file = Vec::new();
//! let mut writer = Writer::new(&mut file, Format::JsonLines);
//! writer.write(&Entry { at_micros: 1, topic: "a.b".into(), payload: 7 }).unwrap();
//! drop(writer);
//! let mut reader = Reader::<_, i32>::new(&file[..], Format::JsonLines);
//! assert_eq!(reader.next().unwrap().unwrap().payload, 7);
//! assert!(reader.next().is_none());
//! ```

mod playback;
mod record;
mod recording;

pub use playback::{Pace, Playback, PlaybackConfig};
pub use record::{Record, RecordConfig};
pub use recording::{Entry, Format, ReadError, Reader, Writer};
