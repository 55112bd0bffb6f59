//! HTTP requests through the REST server to bus handlers and back, over
//! real HTTP on loopback.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{Full, StreamBody};
use hyper::Request;
use hyper::body::Frame;
use serde::Deserialize;
use serde_json::{Value, json};
use telamon_module_rest_server::{Body, RestRequest, RestResponse, http_error};
use telamon_sdk::{HandlerError, Request as BusRequest};

/// Answers with the request it got, as JSON.
fn echo(r: BusRequest<Value>) -> Result<Value, HandlerError> {
    let request = RestRequest::deserialize(&**r.message())?;
    let mut body = serde_json::to_value(&request)?;
    body["topic"] = r.topic().as_str().into();
    Ok(RestResponse::json(200, body).into())
}

#[tokio::test]
async fn method_path_query_headers_and_body_reach_the_handler() {
    let (p, addr) = start("allow-headers = [\"X-Tenant\"]", "").await;
    let ctx = p.context("t");
    let _h = ctx
        .handle("rest.#", |r| async move { echo(r) })
        .await
        .unwrap();
    let c = client();

    let a = send(
        &c,
        Request::get(format!(
            "http://{addr}/items/42/caf%C3%A9?q=a%20b&tag=x&tag=y&plus=1+2&empty="
        ))
        .header("x-tenant", "acme")
        .header("x-secret", "hunter2")
        .body(Full::new(Bytes::new()))
        .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let got = a.json();
    assert_eq!(got["topic"], "rest.get.items.42.café");
    assert_eq!(got["method"], "GET");
    assert_eq!(got["path"], "/items/42/caf%C3%A9");
    assert_eq!(got["path-elements"], json!(["items", "42", "café"]));
    assert_eq!(
        got["query"],
        json!({"q": ["a b"], "tag": ["x", "y"], "plus": ["1 2"], "empty": [""]})
    );
    assert_eq!(
        got["headers"],
        json!({"x-tenant": "acme"}),
        "only allowed headers"
    );
    assert_eq!(got.get("body"), None, "no body");

    let a = send(
        &c,
        post_json(addr, "/items", &json!({"name": "pen", "n": 3})),
    )
    .await;
    assert_eq!(a.json()["topic"], "rest.post.items");
    assert_eq!(a.json()["body"], json!({"json": {"name": "pen", "n": 3}}));

    let a = send(
        &c,
        Request::put(format!("http://{addr}/blob"))
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from_static(&[0, 1, 255])))
            .unwrap(),
    )
    .await;
    assert_eq!(a.json()["topic"], "rest.put.blob");
    assert_eq!(a.json()["body"], json!({"bytes": [0, 1, 255]}));
    p.stop().await;
}

#[tokio::test]
async fn a_response_keeps_its_status_headers_content_type_and_body() {
    let (p, addr) = start("", "").await;
    let ctx = p.context("t");
    let _a = ctx
        .handle("rest.post.items", |_| async {
            Ok(Value::from(
                RestResponse::json(201, json!({"id": 7})).with_header("location", "/items/7"),
            ))
        })
        .await
        .unwrap();
    let _b = ctx
        .handle("rest.get.page", |_| async {
            Ok(Value::from(RestResponse {
                content_type: Some("text/html; charset=utf-8".into()),
                ..RestResponse::text(200, "<h1>hi</h1>")
            }))
        })
        .await
        .unwrap();
    let _c = ctx
        .handle("rest.get.raw", |_| async {
            Ok(Value::from(RestResponse::bytes(
                200,
                "image/png",
                vec![137, 80],
            )))
        })
        .await
        .unwrap();
    let _d = ctx
        .handle("rest.delete.items.*", |_| async {
            Ok(Value::from(RestResponse::empty(204)))
        })
        .await
        .unwrap();
    let c = client();
    let a = send(&c, post_json(addr, "/items", &json!({}))).await;
    assert_eq!((a.status, a.header("location")), (201, Some("/items/7")));
    assert_eq!(a.json(), json!({"id": 7}));
    let a = send(&c, get(addr, "/page")).await;
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(&a.body[..], b"<h1>hi</h1>");
    let a = send(&c, get(addr, "/raw")).await;
    assert_eq!(a.header("content-type"), Some("image/png"));
    assert_eq!(&a.body[..], &[137, 80]);
    let a = send(
        &c,
        Request::delete(format!("http://{addr}/items/7"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!((a.status, a.body.len()), (204, 0));
    p.stop().await;
}

#[tokio::test]
async fn no_handler_is_a_404_at_once_not_after_the_timeout() {
    // A 60 s timeout: a 404 that waited for it would miss the client's 10 s.
    let (p, addr) = start("timeout = \"60s\"", "").await;
    let a = send(&client(), get(addr, "/nobody/home")).await;
    assert_eq!(a.status, 404);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("rest.get.nobody.home"),
        "{:?}",
        a.json()
    );
    p.stop().await;
}

#[tokio::test]
async fn handler_errors_become_their_status_or_500_with_a_json_body() {
    let (p, addr) = start("", "").await;
    let ctx = p.context("t");
    let _a = ctx
        .handle("rest.get.conflict", |_| async {
            Err::<Value, _>(http_error(409, "already there"))
        })
        .await
        .unwrap();
    let _b = ctx
        .handle("rest.get.broken", |_| async {
            Err::<Value, _>(HandlerError::new("disk on fire").with_code("disk"))
        })
        .await
        .unwrap();
    let _c = ctx
        .handle("rest.get.panics", |_| async {
            if true {
                panic!("handler bug");
            }
            Ok(Value::Null)
        })
        .await
        .unwrap();
    let _d = ctx
        .handle("rest.get.confused", |_| async { Ok(json!({"hello": 1})) })
        .await
        .unwrap();
    let _e = ctx
        .handle("rest.get.framing", |_| async {
            Ok(Value::from(
                RestResponse::text(200, "hi").with_header("content-length", "1000"),
            ))
        })
        .await
        .unwrap();
    let _f = ctx
        .handle("rest.get.informational", |_| async {
            Ok(Value::from(RestResponse::empty(101)))
        })
        .await
        .unwrap();
    let _g = ctx
        .handle("rest.get.odd-code", |_| async {
            Err::<Value, _>(HandlerError::new("odd").with_code("1001"))
        })
        .await
        .unwrap();
    let c = client();
    let a = send(&c, get(addr, "/conflict")).await;
    assert_eq!(a.status, 409);
    assert_eq!(a.json(), json!({"error": "already there", "status": 409}));
    let a = send(&c, get(addr, "/broken")).await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.json(),
        json!({"error": "disk on fire", "status": 500, "code": "disk"})
    );
    let a = send(&c, get(addr, "/panics")).await;
    assert_eq!(a.status, 500);
    let a = send(&c, get(addr, "/confused")).await;
    assert_eq!(a.status, 500);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("not a REST response"),
        "{:?}",
        a.json()
    );
    p.stop().await;
}

#[tokio::test]
async fn a_slow_handler_is_a_504_after_its_route_timeout() {
    let (p, addr) = start(
        "timeout = \"60s\"\nroute-timeouts = [{ pattern = \"rest.get.slow.#\", timeout = \"200ms\" }]",
        "",
    )
    .await;
    let ctx = p.context("t");
    let _a = ctx
        .handle("rest.get.slow.#", |_| async {
            std::future::pending::<()>().await;
            Ok(Value::Null)
        })
        .await
        .unwrap();
    let a = send(&client(), get(addr, "/slow/report")).await;
    assert_eq!(a.status, 504);
    assert!(a.json()["error"].as_str().unwrap().contains("timed out"));
    p.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_the_bus() {
    let (p, addr) = start("body-limit = 1000", "").await;
    let ctx = p.context("t");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let _h = ctx
        .handle("rest.#", move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok(Value::from(RestResponse::empty(200))) }
        })
        .await
        .unwrap();
    let c = client();

    // Declared too large: refused before the body is read.
    let big = Bytes::from(vec![b'x'; 1001]);
    let a = send(
        &c,
        Request::post(format!("http://{addr}/upload"))
            .body(Full::new(big.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 413);
    // Chunked, no length: refused once the limit is passed.
    let chunks = futures_util::stream::iter(
        (0..20)
            .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'y'; 100])))),
    );
    let chunked_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<StreamBody<_>>();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        chunked_client.request(
            Request::post(format!("http://{addr}/upload"))
                .body(StreamBody::new(chunks))
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.status(), 413);

    // JSON that is not JSON.
    let a = send(
        &c,
        Request::post(format!("http://{addr}/items"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"name\": ")))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    // Path words that cannot be topic words.
    let odd_method = send(
        &c,
        Request::builder()
            .method(hyper::Method::from_bytes(b"GET.X").unwrap())
            .uri(format!("http://{addr}/y"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(odd_method.status, 400);
    for path in ["/report.pdf", "/a/%2A", "/%23/x", "/%FF"] {
        let a = send(&c, get(addr, path)).await;
        assert_eq!(a.status, 400, "{path}");
    }
    let long = format!("/{}", "w/".repeat(200));
    assert_eq!(send(&c, get(addr, &long)).await.status, 414);

    assert_eq!(seen.load(Ordering::SeqCst), 0, "nothing reached the bus");
    // Exactly at the limit is fine.
    let a = send(
        &c,
        Request::post(format!("http://{addr}/upload"))
            .body(Full::new(Bytes::from(vec![b'x'; 1000])))
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    p.stop().await;
}

#[tokio::test]
async fn cors_preflights_are_answered_and_answers_carry_the_origin() {
    let (p, addr) = start(
        "[module.rest.cors]\nallow-origins = [\"https://app.example\"]\nallow-headers = [\"content-type\", \"x-tenant\"]",
        "",
    )
    .await;
    let ctx = p.context("t");
    let _h = ctx
        .handle("rest.get.items", |_| async {
            Ok(Value::from(RestResponse::json(200, json!([]))))
        })
        .await
        .unwrap();
    let c = client();
    let preflight = |origin: &str| {
        Request::options(format!("http://{addr}/items"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "x-tenant")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let a = send(&c, preflight("https://app.example")).await;
    assert_eq!(a.status, 204);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        a.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("content-type, x-tenant")
    );
    assert_eq!(a.header("access-control-max-age"), Some("600"));
    assert_eq!(a.headers.get_all("vary").iter().count(), 1, "one Vary");
    let a = send(&c, preflight("https://evil.example")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.header("access-control-allow-origin"), None);

    let with_origin = |origin: &str| {
        Request::get(format!("http://{addr}/items"))
            .header("origin", origin)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let a = send(&c, with_origin("https://app.example")).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let a = send(&c, with_origin("https://evil.example")).await;
    assert_eq!(a.header("access-control-allow-origin"), None);
    // Answers vary by origin, also the ones without the header, so a shared
    // cache does not hand them to an allowed origin.
    assert_eq!(a.header("vary"), Some("origin"));
    assert_eq!(
        send(&c, get(addr, "/items")).await.header("vary"),
        Some("origin")
    );
    p.stop().await;
}

#[tokio::test]
async fn static_files_are_served_and_the_rest_goes_to_the_bus() {
    let dir = std::env::temp_dir().join(format!("telamon-rest-static-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("js")).unwrap();
    std::fs::write(dir.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(dir.join("js/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
    let outside = dir
        .parent()
        .unwrap()
        .join(format!("telamon-rest-outside-{}", std::process::id()));
    std::fs::write(&outside, "outside").unwrap();
    let (p, addr) = start(
        &format!(
            "[module.rest.static]\nfolder = {:?}",
            dir.display().to_string()
        ),
        "",
    )
    .await;
    let ctx = p.context("t");
    let _h = ctx
        .handle("rest.get.api.#", |_| async {
            Ok(Value::from(RestResponse::json(200, json!("from the bus"))))
        })
        .await
        .unwrap();
    let c = client();
    let a = send(&c, get(addr, "/")).await;
    assert_eq!((a.status, &a.body[..]), (200, &b"<h1>home</h1>"[..]));
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    let a = send(&c, get(addr, "/js/app.js")).await;
    assert_eq!(
        a.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(&a.body[..], b"console.log(1)");
    let a = send(
        &c,
        Request::head(format!("http://{addr}/js/app.js"))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!((a.status, a.body.len()), (200, 0));
    assert_eq!(a.header("content-length"), Some("14"));
    // No file there: the bus answers.
    assert_eq!(
        send(&c, get(addr, "/api/items")).await.json(),
        json!("from the bus")
    );
    // Hidden files and ways out of the folder.
    let name = outside.file_name().unwrap().to_str().unwrap();
    for path in [
        "/.env".to_owned(),
        format!("/%2e%2e/{name}"),
        format!("/js/%2E%2E/%2e%2e/{name}"),
        format!("/..%2F{name}"),
        format!("/js%2F..%2F..%2F{name}"),
        "/js%5Capp.js".to_owned(),
        "/js/app.js%00".to_owned(),
    ] {
        let a = send(&c, get(addr, &path)).await;
        assert_eq!(a.status, 404, "{path}");
        assert_ne!(&a.body[..], b"outside", "{path}");
    }
    p.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&outside).unwrap();
}

#[tokio::test]
async fn two_servers_in_one_process_keep_their_own_prefixes() {
    let other = free_port();
    let (p, addr) = start(
        "prefix = \"public\"",
        &format!(
            "[module.admin]\nclass = \"rest-server\"\naddress = \"127.0.0.1:{other}\"\nprefix = \"admin\""
        ),
    )
    .await;
    let ctx = p.context("t");
    let _h = ctx.handle("#", |r| async move { echo(r) }).await.unwrap();
    let c = client();
    let a = send(&c, get(addr, "/status")).await;
    assert_eq!(a.json()["topic"], "public.get.status");
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], other));
    let a = send(&c, get(admin, "/status")).await;
    assert_eq!(a.json()["topic"], "admin.get.status");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_from_64_clients_are_all_answered() {
    let (p, addr) = start("", "").await;
    let ctx = p.context("t");
    let _h = ctx
        .handle("rest.get.square.*", |r| async move {
            let n: u64 = r.topic().words().last().unwrap().parse()?;
            Ok(Value::from(RestResponse::json(200, json!(n * n))))
        })
        .await
        .unwrap();
    let mut clients = Vec::new();
    for c in 0..64u64 {
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut ok = 0;
            for i in 0..157u64 {
                let n = c * 1000 + i;
                if c * 157 + i >= 10_000 {
                    break;
                }
                let a = send(&client, get(addr, &format!("/square/{n}"))).await;
                assert_eq!((a.status, a.json()), (200, json!(n * n)));
                ok += 1;
            }
            ok
        }));
    }
    let mut answered = 0;
    for c in clients {
        answered += c.await.unwrap();
    }
    assert_eq!(answered, 10_000);
    assert_eq!(
        metric(
            &p,
            "telamon_rest_requests_total{module=\"rest\",status=\"2xx\"}"
        ),
        Some(10_000.0)
    );
    p.stop().await;
}

#[tokio::test]
async fn bad_config_and_a_taken_port_fail_startup_naming_the_cause() {
    let e = try_start("[module.rest]\nclass = \"rest-server\"\nbody-limt = 10")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("body-limt"), "{e}");
    let e = try_start(
        "[module.rest]\nclass = \"rest-server\"\nevents = [{ path = \"/e\", pattern = \"a.#.\" }]",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("events[0].pattern"), "{e}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let e = try_start(&format!(
        "[module.rest]\nclass = \"rest-server\"\naddress = \"{address}\""
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains(&format!("cannot listen on `{address}`")), "{e}");
}

#[test]
fn a_request_body_round_trips_through_a_json_value() {
    let r = RestRequest {
        method: "POST".into(),
        path: "/x".into(),
        path_elements: vec!["x".into()],
        query: Default::default(),
        headers: Default::default(),
        body: Body::Bytes(vec![1, 2, 3]),
    };
    let v = Value::from(r.clone());
    assert_eq!(serde_json::from_value::<RestRequest>(v).unwrap(), r);
}
