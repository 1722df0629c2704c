//! The entity store of a single node: a gateway killed with SIGKILL while the management API
//! writes loses no write it acknowledged, and comes back with its store whole.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{ferry, free_port, within};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const TOKEN: &str = "admin-token-0123456789";
const HC: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Relay/namespaces/localhost/hybridConnections";

/// A gateway configuration in `dir` with a TLS port, an admin port taking [`TOKEN`], a data
/// directory and one Manage rule (`root`, key `k`): the file, the admin port, the CA file.
fn setup(dir: &std::path::Path) -> (String, u16, std::path::PathBuf) {
    let (tls, admin) = (free_port(), free_port());
    let ca = dir.join("ca.pem");
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "namespace = \"localhost\"\ndata_dir = \"{data}\"\n[listen]\ntls = \"127.0.0.1:{tls}\"\n\
             [tls]\ndev = true\ndev_ca_out = \"{ca}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\
             [[rules]]\nname = \"root\"\nkey = \"k\"\nrights = [\"Manage\"]\n",
            data = dir.join("data").display(),
            ca = ca.display(),
        ),
    )
    .unwrap();
    (config.to_str().unwrap().to_owned(), admin, ca)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_writing_keeps_every_acknowledged_entity() {
    within(async {
        let curl = std::process::Command::new("curl").arg("--version").output();
        assert!(
            curl.is_ok_and(|o| o.status.success()),
            "curl is missing: apt-get install curl"
        );
        let dir = tempfile::tempdir().unwrap();
        let (config, admin, ca) = setup(dir.path());
        let args = ["gateway", "--config", config.as_str()];
        let start = || ferry(&args, &[], "listening (admin)");

        let mut gateway = start().await;
        // Writes one hybrid connection after another, saying which ones were acknowledged.
        let url = format!("https://localhost:{admin}{HC}");
        let script = format!(
            "i=0; while true; do \
               s=$(curl -s -o /dev/null -w '%{{http_code}}' --cacert '{ca}' -X PUT \
                 -H 'Authorization: Bearer {TOKEN}' -H 'Content-Type: application/json' \
                 --data '{{\"properties\":{{\"userMetadata\":\"n'$i'\"}}}}' \
                 '{url}/hc-'$i'?api-version=2021-11-01'); \
               [ \"$s\" = 200 ] && echo \"ok $i\"; i=$((i+1)); done",
            ca = ca.display()
        );
        let mut writer = tokio::process::Command::new("bash")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(writer.stdout.take().unwrap()).lines();
        let mut acked = Vec::new();
        while acked.len() < 40 {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the writer goes on");
            acked.push(line.trim_start_matches("ok ").parse::<u32>().unwrap());
        }
        // Killed between writes or in the middle of one: whatever is in flight is not yet
        // acknowledged.
        gateway.start_kill().unwrap();
        gateway.wait().await.unwrap();
        // What the writer heard before the kill landed is acknowledged too.
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
        {
            acked.push(line.trim_start_matches("ok ").parse::<u32>().unwrap());
        }
        writer.start_kill().unwrap();
        let _ = writer.wait().await;

        let _gateway = start().await;
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&ca)
            .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("{url}?api-version=2021-11-01"))
            .output()
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let names: Vec<&str> = list["value"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        for i in &acked {
            assert!(
                names.contains(&format!("hc-{i}").as_str()),
                "hc-{i} was acknowledged and lost: {names:?}"
            );
        }
        // At most the one write in flight at the kill got in without its answer.
        assert!(
            names.len() <= acked.len() + 1,
            "{} stored, {} acknowledged",
            names.len(),
            acked.len()
        );
        let metadata = list["value"][0]["properties"]["userMetadata"]
            .as_str()
            .unwrap();
        assert!(metadata.starts_with('n'), "{metadata}");
    })
    .await;
}

/// Runs `ferry admin ARGS` against the admin port; its printed JSON, or its error.
async fn ferry_admin(
    admin: u16,
    ca: &std::path::Path,
    args: &[&str],
) -> Result<serde_json::Value, String> {
    let out = tokio::process::Command::new(common::FERRY)
        .arg("admin")
        .args([
            "--url",
            &format!("https://localhost:{admin}"),
            "--token",
            TOKEN,
            "--ca",
        ])
        .arg(ca)
        .args(args)
        .output()
        .await
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_admin_manages_what_azure_mgmt_relay_then_reads() {
    within(async {
        let dir = tempfile::tempdir().unwrap();
        let (config, admin, ca) = setup(dir.path());
        let _gateway = ferry(&["gateway", "--config", &config], &[], "listening (admin)").await;
        let created = ferry_admin(
            admin,
            &ca,
            &["create", "orders", "--metadata", "from the CLI"],
        )
        .await
        .unwrap();
        assert_eq!(created["name"], "orders", "{created}");
        let rule = ferry_admin(
            admin,
            &ca,
            &["rule", "app", "--rights", "Listen,Send", "--path", "orders"],
        )
        .await
        .unwrap();
        assert_eq!(
            rule["properties"]["rights"],
            serde_json::json!(["Listen", "Send"])
        );
        let keys = ferry_admin(admin, &ca, &["keys", "app", "--path", "orders"])
            .await
            .unwrap();
        let conn = keys["primaryConnectionString"].as_str().unwrap();
        assert!(
            conn.ends_with(";EntityPath=orders") && conn.contains("SharedAccessKeyName=app"),
            "{conn}"
        );
        let rotated = ferry_admin(
            admin,
            &ca,
            &["rotate", "app", "--which", "secondary", "--path", "orders"],
        )
        .await
        .unwrap();
        assert_eq!(rotated["primaryKey"], keys["primaryKey"]);
        assert_ne!(rotated["secondaryKey"], keys["secondaryKey"]);

        // Microsoft's SDK sees what the CLI made.
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/arm/mgmt.py");
        let out = tokio::process::Command::new("python3")
            .arg(script)
            .args([
                &format!("https://localhost:{admin}"),
                "localhost",
                "root",
                "k",
                "get",
                "orders",
            ])
            .env("REQUESTS_CA_BUNDLE", &ca)
            .output()
            .await
            .unwrap();
        let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "azure-mgmt-relay (pip install -r interop/requirements.txt): {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(seen["userMetadata"], "from the CLI", "{seen}");

        let listed = ferry_admin(admin, &ca, &["list"]).await.unwrap();
        assert_eq!(listed[0]["name"], "orders", "{listed}");
        ferry_admin(admin, &ca, &["delete", "orders"])
            .await
            .unwrap();
        assert_eq!(
            ferry_admin(admin, &ca, &["list"]).await.unwrap(),
            serde_json::json!([])
        );
        let missing = ferry_admin(admin, &ca, &["show", "orders"])
            .await
            .unwrap_err();
        assert!(
            missing.contains("404") && missing.contains("could not be found"),
            "{missing}"
        );
    })
    .await;
}
