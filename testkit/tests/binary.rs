//! The standalone `axon-test-server` binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use telamon_axon_proto::pb::control::ClientIdentification;
use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_url_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_axon-test-server"))
            .args(["--port", "0", "--token", "t0ken"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("binary starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .expect("prints within the bound")
    .expect("join")
    .expect("reads");
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("url at the end")
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let mut client = PlatformServiceClient::connect(url).await.expect("connects");
    let mut request = tonic::Request::new(ClientIdentification::default());
    request.metadata_mut().insert(
        telamon_axon_proto::headers::ACCESS_TOKEN,
        "t0ken".parse().expect("ascii"),
    );
    let info = client
        .get_platform_server(request)
        .await
        .expect("served")
        .into_inner();
    assert!(info.same_connection);
}

#[test]
fn binary_rejects_unknown_arguments() {
    let status = Command::new(env!("CARGO_BIN_EXE_axon-test-server"))
        .arg("--bogus")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert_eq!(status.code(), Some(2));
}
