//! Record and play back through real processes: the round trip keeps topics,
//! payloads and order (both formats); the recorded pace is kept, as the
//! recording of the playback shows; a damaged recording plays what is valid
//! and says where it stopped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use telamon_module_record::{Entry, Format, Playback, Reader, Record, Writer};
use telamon_process::{ConfigLoader, Process, RunningProcess};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("telamon-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn read(path: &Path, format: Format) -> Vec<Entry<Value>> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    Reader::new(file, format).map(|e| e.unwrap()).collect()
}

async fn start(toml: &str) -> RunningProcess<Value> {
    let config = ConfigLoader::new()
        .embedded(toml.to_owned())
        .env_prefix(None)
        .load()
        .unwrap();
    Process::<Value>::new(config)
        .module::<Record<Value>>()
        .module::<Playback<Value>>()
        .start()
        .await
        .unwrap()
}

/// Plays `from` in a process that records `rt.#` to `to`; returns once the
/// playback asked the process to stop, with the process still running.
async fn play(from: &Path, to: &Path, format: &str, pace: &str) -> RunningProcess<Value> {
    let p = start(&format!(
        "[module.record]\npatterns = [\"rt.#\"]\nfile = {to:?}\nformat = \"{format}\"\n\
         [module.playback]\nfile = {from:?}\nformat = \"{format}\"\n{pace}\nstop-when-done = true\n"
    ))
    .await;
    tokio::time::timeout(Duration::from_secs(10), p.wait_for_stop())
        .await
        .expect("playback finished");
    p
}

fn traffic() -> Vec<(&'static str, Value)> {
    (0..50)
        .map(|i| match i % 3 {
            0 => ("rt.a", json!(i)),
            1 => (
                "rt.b.c",
                json!({ "n": i, "text": "é\n\"quoted\"", "list": [1, null, true] }),
            ),
            _ => ("rt.a", json!(format!("message {i}"))),
        })
        .collect()
}

async fn round_trip(format: &str, parsed: Format) {
    let first = temp(&format!("first.{format}"));
    let second = temp(&format!("second.{format}"));
    let p = start(&format!(
        "[module.record]\npatterns = [\"rt.#\"]\nfile = {first:?}\nformat = \"{format}\"\n"
    ))
    .await;
    let ctx = p.context("t");
    for (topic, payload) in traffic() {
        ctx.publish(topic, payload).await.unwrap();
        ctx.publish("other.x", json!("not recorded")).await.unwrap();
    }
    p.stop().await;
    let recorded = read(&first, parsed);
    let want: Vec<(String, Value)> = traffic()
        .into_iter()
        .map(|(t, v)| (t.to_owned(), v))
        .collect();
    let got: Vec<(String, Value)> = recorded
        .iter()
        .map(|e| (e.topic.clone(), e.payload.clone()))
        .collect();
    assert_eq!(got, want, "the recording");
    play(&first, &second, format, "pace = \"fast\"")
        .await
        .stop()
        .await;
    let replayed: Vec<(String, Value)> = read(&second, parsed)
        .into_iter()
        .map(|e| (e.topic, e.payload))
        .collect();
    assert_eq!(replayed, want, "what the playback published");
}

#[tokio::test]
async fn a_json_lines_round_trip_keeps_topics_payloads_and_order() {
    round_trip("json-lines", Format::JsonLines).await;
}

#[tokio::test]
async fn a_cbor_round_trip_keeps_topics_payloads_and_order() {
    round_trip("cbor", Format::Cbor).await;
}

#[tokio::test]
async fn the_recorded_pace_is_kept_at_the_speed_asked() {
    let first = temp("paced.jsonl");
    let second = temp("paced-again.jsonl");
    // Four messages 200 ms apart, written directly: no waiting needed.
    let mut file = std::fs::File::create(&first).unwrap();
    let mut w = Writer::new(&mut file, Format::JsonLines);
    for i in 0..4u64 {
        w.write(&Entry {
            at_micros: 1_000_000 + i * 200_000,
            topic: "rt.tick".into(),
            payload: json!(i),
        })
        .unwrap();
    }
    play(
        &first,
        &second,
        "json-lines",
        "pace = \"recorded\"\nspeed = 2.0",
    )
    .await
    .stop()
    .await;
    let played = read(&second, Format::JsonLines);
    assert_eq!(played.len(), 4);
    // Twice as fast: 100 ms apart, as the recorder of the playback saw them.
    for pair in played.windows(2) {
        let gap_ms = (pair[1].at_micros - pair[0].at_micros) as f64 / 1000.0;
        assert!(
            // The playback never sends early; the recorder of the playback
            // stamps on writing, which may lag a few ms on a busy machine.
            // Below the recorded 200 ms by a margin, so speed 1 would fail.
            (80.0..=160.0).contains(&gap_ms),
            "gap {gap_ms} ms, want 100 ms: {played:?}"
        );
    }
}

/// Everything logged on this thread, as text.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What playing a damaged recording gave: the payloads played, the log, the
/// metrics text, and where each of the ten original records ended.
struct Damaged {
    played: Vec<Value>,
    log: String,
    metrics: String,
    ends: Vec<usize>,
}

/// Writes ten records, lets `damage` spoil the bytes (given where each record
/// ends), and plays them.
async fn damaged(
    name: &str,
    format: &str,
    parsed: Format,
    damage: impl Fn(&mut Vec<u8>, &[usize]),
) -> Damaged {
    let log = Log::default();
    let writer = log.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let first = temp(&format!("{name}.{format}"));
    let second = temp(&format!("{name}-played.{format}"));
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for i in 0..10u64 {
        Writer::new(&mut bytes, parsed)
            .write(&Entry {
                at_micros: i,
                topic: "rt.x".into(),
                payload: json!({ "n": i }),
            })
            .unwrap();
        ends.push(bytes.len());
    }
    damage(&mut bytes, &ends);
    std::fs::write(&first, &bytes).unwrap();
    let p = play(&first, &second, format, "pace = \"fast\"").await;
    let metrics = p.metrics().render();
    p.stop().await;
    let played = read(&second, parsed)
        .into_iter()
        .map(|e| e.payload)
        .collect();
    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    Damaged {
        played,
        log,
        metrics,
        ends,
    }
}

fn payloads(n: u64) -> Vec<Value> {
    (0..n).map(|i| json!({ "n": i })).collect()
}

#[tokio::test]
async fn a_truncated_json_lines_recording_plays_what_is_whole_and_says_where_it_stopped() {
    let d = damaged(
        "truncated",
        "json-lines",
        Format::JsonLines,
        |bytes, ends| {
            bytes.truncate(ends[8] + 5);
        },
    )
    .await;
    assert_eq!(d.played, payloads(9));
    let at = d.ends[8];
    assert!(
        d.log
            .contains(&format!("recording damaged at byte {at} (record 10)")),
        "{}",
        d.log
    );
    assert!(
        d.metrics
            .contains("telamon_playback_damaged{module=\"playback\"} 1"),
        "{}",
        d.metrics
    );
}

#[tokio::test]
async fn a_corrupt_record_in_the_middle_stops_playback_there() {
    let d = damaged("corrupt", "json-lines", Format::JsonLines, |bytes, ends| {
        // Record 5 becomes garbage of the same length (its newline kept).
        for b in &mut bytes[ends[3]..ends[4] - 1] {
            *b = b'#';
        }
    })
    .await;
    assert_eq!(d.played, payloads(4));
    let at = d.ends[3];
    assert!(
        d.log
            .contains(&format!("recording damaged at byte {at} (record 5)")),
        "{}",
        d.log
    );
}

#[tokio::test]
async fn a_truncated_cbor_recording_plays_what_is_whole_and_says_where_it_stopped() {
    let d = damaged("truncated", "cbor", Format::Cbor, |bytes, ends| {
        bytes.truncate(ends[6] + 3);
    })
    .await;
    assert_eq!(d.played, payloads(7));
    let at = d.ends[6];
    assert!(
        d.log
            .contains(&format!("recording damaged at byte {at} (record 8)")),
        "{}",
        d.log
    );
}

/// A recording of three records and the first half of a fourth (a crash
/// mid-write); recording again must cut the half record and append whole ones.
async fn recording_after_a_crash(name: &str, format: &str, parsed: Format) {
    let path = temp(name);
    let mut bytes = Vec::new();
    for i in 0..4u64 {
        Writer::new(&mut bytes, parsed)
            .write(&Entry {
                at_micros: i,
                topic: "rt.old".into(),
                payload: json!({ "n": i, "pad": "some text to cut in half" }),
            })
            .unwrap();
        if i == 2 {
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    let three = std::fs::read(&path).unwrap().len();
    let half = three + (bytes.len() - three) / 2;
    std::fs::write(&path, &bytes[..half]).unwrap();
    let p = start(&format!(
        "[module.record]\npatterns = [\"rt.#\"]\nfile = {path:?}\nformat = \"{format}\"\n"
    ))
    .await;
    let ctx = p.context("t");
    ctx.publish("rt.new", json!("a")).await.unwrap();
    ctx.publish("rt.new", json!("b")).await.unwrap();
    p.stop().await;
    let all: Vec<Value> = read(&path, parsed).into_iter().map(|e| e.payload).collect();
    let old = |n: u64| json!({ "n": n, "pad": "some text to cut in half" });
    assert_eq!(all, vec![old(0), old(1), old(2), json!("a"), json!("b")]);
}

#[tokio::test]
async fn recording_after_a_crash_cuts_the_damaged_end_json_lines() {
    recording_after_a_crash("crashed.jsonl", "json-lines", Format::JsonLines).await;
}

#[tokio::test]
async fn recording_after_a_crash_cuts_the_damaged_end_cbor() {
    recording_after_a_crash("crashed.cbor", "cbor", Format::Cbor).await;
}
