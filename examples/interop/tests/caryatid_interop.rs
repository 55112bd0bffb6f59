//! Telamon's CBOR is readable by Caryatid (minicbor-serde 0.6) and the other
//! way round; live pub-sub works both ways on one exchange.

use std::collections::BTreeMap;

use interop::{Reading, exchange_both_ways};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Circle { r: f64 },
    Unit,
    Tuple(f32, i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Everything {
    small_float: f64,
    third: f64,
    single: f32,
    shapes: Vec<Shape>,
    maybe: Option<String>,
    nothing: (),
    map: BTreeMap<String, u64>,
    bytes: Vec<u8>,
}

fn sample() -> Everything {
    Everything {
        small_float: 1.5,
        third: 1.0 / 3.0,
        single: 0.25,
        shapes: vec![Shape::Circle { r: 2.0 }, Shape::Unit, Shape::Tuple(0.5, -7)],
        maybe: Some("x".into()),
        nothing: (),
        map: BTreeMap::from([("a".into(), 1), ("b".into(), u64::MAX)]),
        bytes: vec![0, 255, 7],
    }
}

#[test]
fn caryatid_decodes_what_telamon_encodes_and_back() {
    let value = sample();
    let telamon_bytes = telamon_process::codec::encode_cbor_with(
        &value,
        telamon_process::codec::CborUnit::EmptyArray,
    )
    .unwrap();
    let read_by_caryatid: Everything = minicbor_serde_06::from_slice(&telamon_bytes).unwrap();
    assert_eq!(read_by_caryatid, value);
    let caryatid_bytes = minicbor_serde_06::to_vec(&value).unwrap();
    assert_eq!(
        caryatid_bytes, telamon_bytes,
        "byte for byte the same encoding"
    );
    let read_by_telamon: Everything =
        telamon_process::codec::decode_cbor(&caryatid_bytes, &Default::default()).unwrap();
    assert_eq!(read_by_telamon, value);
}

#[test]
fn plain_ciborium_output_is_what_caryatid_cannot_read_and_telamon_can() {
    let value = sample();
    let mut shortened = Vec::new();
    ciborium::into_writer(&value, &mut shortened).unwrap();
    assert!(minicbor_serde_06::from_slice::<Everything>(&shortened).is_err());
    assert_eq!(
        telamon_process::codec::decode_cbor::<Everything>(&shortened, &Default::default()).unwrap(),
        value
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telamon_and_caryatid_processes_exchange_messages_both_ways() {
    let url = std::env::var("TELAMON_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let exchange = format!("telamon.test.caryatid.{}.{nanos:x}", std::process::id());
    let prefix = format!("interop{nanos:x}");
    let e = exchange_both_ways(&url, &exchange, &prefix)
        .await
        .unwrap_or_else(|err| panic!("{err:#} (is RabbitMQ running? `rabbitmq-server -detached`)"));
    assert_eq!(
        e.caryatid_got,
        Reading {
            sensor: "telamon".into(),
            value: 1.5,
            ok: true
        }
    );
    assert_eq!(
        e.telamon_got,
        Reading {
            sensor: "caryatid".into(),
            value: -0.25,
            ok: false
        }
    );
}
