//! `ferry admin`: the management API from the command line, for people without an SDK. It
//! speaks the same Azure-shaped routes Microsoft's SDKs do and prints what the gateway
//! answers, as JSON.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use ferry_hc::SasToken;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The api-version this client sends.
const API_VERSION: &str = "2021-11-01";

/// Longest any call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Stand-ins for the subscription and resource group, which Ferry accepts whatever they say.
const SCOPE: &str = "/subscriptions/ferry/resourceGroups/ferry/providers/Microsoft.Relay";

#[derive(Args)]
pub(crate) struct AdminArgs {
    /// The admin port, https://HOST:PORT.
    #[arg(
        long,
        env = "FERRY_ADMIN_URL",
        default_value = "https://localhost:9444"
    )]
    url: String,
    /// The admin token.
    #[arg(
        long,
        env = "FERRY_ADMIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "key"
    )]
    token: Option<String>,
    /// A namespace rule with Manage rights, to sign a token with (instead of --token).
    #[arg(long, env = "FERRY_KEY_NAME", requires = "key")]
    key_name: Option<String>,
    /// The rule's key.
    #[arg(long, env = "FERRY_KEY", hide_env_values = true, requires = "key_name")]
    key: Option<String>,
    /// The namespace's host name, the token's audience (default: the admin URL's host).
    #[arg(long, env = "FERRY_NAMESPACE")]
    namespace: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the development CA.
    #[arg(long, env = "FERRY_CA")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List the hybrid connections, with their live listener counts.
    List,
    /// Show one hybrid connection.
    Show { name: String },
    /// Create (or update) a hybrid connection.
    Create {
        name: String,
        /// Senders need no token.
        #[arg(long)]
        anonymous: bool,
        /// Free text kept with it (userMetadata).
        #[arg(long, default_value = "")]
        metadata: String,
    },
    /// Delete a hybrid connection: its listeners are closed, its senders get 404.
    Delete { name: String },
    /// List authorization rules: the namespace's, or with --path one hybrid connection's.
    Rules {
        #[arg(long)]
        path: Option<String>,
    },
    /// Create (or update) an authorization rule; its keys are generated.
    Rule {
        name: String,
        /// Comma-separated: Listen, Send, Manage (Manage needs the other two).
        #[arg(long, value_delimiter = ',', required = true)]
        rights: Vec<String>,
        #[arg(long)]
        path: Option<String>,
    },
    /// Delete an authorization rule.
    DeleteRule {
        name: String,
        #[arg(long)]
        path: Option<String>,
    },
    /// A rule's keys and connection strings.
    Keys {
        name: String,
        #[arg(long)]
        path: Option<String>,
    },
    /// Replace one of a rule's keys; the other stays valid.
    Rotate {
        name: String,
        /// primary or secondary.
        #[arg(long)]
        which: String,
        #[arg(long)]
        path: Option<String>,
    },
}

/// One admin port and its credential.
struct Client {
    host: String,
    port: u16,
    authorization: String,
    tls: TlsConnector,
}

pub(crate) async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = Client::new(&args)?;
    // The namespace's name in routes, as the gateway names it.
    let listed = client
        .call(
            "GET",
            "/subscriptions/ferry/providers/Microsoft.Relay/namespaces",
            None,
        )
        .await?;
    let ns = listed["value"][0]["name"]
        .as_str()
        .context("the gateway listed no namespace")?
        .to_owned();
    let base = format!("{SCOPE}/namespaces/{ns}");
    let hc = |name: &str| format!("{base}/hybridConnections/{}", encode(name));
    let rules = |path: &Option<String>| match path {
        Some(p) => format!("{}/authorizationRules", hc(p)),
        None => format!("{base}/authorizationRules"),
    };
    let answer = match args.command {
        AdminCommand::List => {
            let list = client
                .call("GET", &format!("{base}/hybridConnections"), None)
                .await?;
            let rows: Vec<Value> = list["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    let p = &h["properties"];
                    json!({
                        "name": h["name"],
                        "listenerCount": p["listenerCount"],
                        "requiresClientAuthorization": p["requiresClientAuthorization"],
                        "userMetadata": p["userMetadata"],
                    })
                })
                .collect();
            Value::Array(rows)
        }
        AdminCommand::Show { name } => client.call("GET", &hc(&name), None).await?,
        AdminCommand::Create {
            name,
            anonymous,
            metadata,
        } => {
            let body = json!({ "properties": {
                "requiresClientAuthorization": !anonymous,
                "userMetadata": metadata,
            }});
            client.call("PUT", &hc(&name), Some(body)).await?
        }
        AdminCommand::Delete { name } => client.call("DELETE", &hc(&name), None).await?,
        AdminCommand::Rules { path } => client.call("GET", &rules(&path), None).await?,
        AdminCommand::Rule { name, rights, path } => {
            let body = json!({ "properties": { "rights": rights } });
            client
                .call(
                    "PUT",
                    &format!("{}/{}", rules(&path), encode(&name)),
                    Some(body),
                )
                .await?
        }
        AdminCommand::DeleteRule { name, path } => {
            client
                .call(
                    "DELETE",
                    &format!("{}/{}", rules(&path), encode(&name)),
                    None,
                )
                .await?
        }
        AdminCommand::Keys { name, path } => {
            client
                .call(
                    "POST",
                    &format!("{}/{}/listKeys", rules(&path), encode(&name)),
                    None,
                )
                .await?
        }
        AdminCommand::Rotate { name, which, path } => {
            let key_type = match which.to_ascii_lowercase().as_str() {
                "primary" => "PrimaryKey",
                "secondary" => "SecondaryKey",
                _ => bail!("--which is primary or secondary"),
            };
            client
                .call(
                    "POST",
                    &format!("{}/{}/regenerateKeys", rules(&path), encode(&name)),
                    Some(json!({ "keyType": key_type })),
                )
                .await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// One path segment, percent-encoded (names may hold `/`).
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let url: http::Uri = args.url.parse().context("--url is not a URL")?;
        if url.scheme_str() != Some("https") {
            bail!("the admin port speaks HTTPS only: --url https://HOST:PORT");
        }
        let host = url.host().context("--url names no host")?.to_owned();
        let port = url.port_u16().unwrap_or(443);
        let authorization = match (&args.token, &args.key_name, &args.key) {
            (Some(token), _, _) => format!("Bearer {token}"),
            (None, Some(name), Some(key)) => {
                let namespace = args.namespace.clone().unwrap_or_else(|| host.clone());
                let expiry = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 600;
                let token = SasToken::create(&format!("sb://{namespace}/"), name, key, expiry);
                format!("Bearer {token}")
            }
            _ => bail!(
                "give --token (or FERRY_ADMIN_TOKEN), or --key-name and --key of a rule with Manage"
            ),
        };
        let mut roots = ferry_net::tls::native_roots();
        if let Some(ca) = &args.ca {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            roots
                .roots
                .extend(ferry_net::tls::roots_from_pem(&pem)?.roots);
        }
        let config = ferry_net::tls::client_config(roots, &[ferry_net::tls::ALPN_HTTP11])?;
        Ok(Self {
            host,
            port,
            authorization,
            tls: TlsConnector::from(config),
        })
    }

    /// One call; the answer's JSON (`null` for an empty one), or the gateway's error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(method, path, body))
            .await
            .context("the admin port did not answer in time")?
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot reach {}:{}", self.host, self.port))?;
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .context("TLS handshake with the admin port")?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        let content = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{path}?api-version={API_VERSION}"))
            .header(http::header::HOST, format!("{}:{}", self.host, self.port))
            .header(http::header::AUTHORIZATION, &self.authorization)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(content)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).context("the admin port answered something not JSON")?
        };
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("(no message)");
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}
