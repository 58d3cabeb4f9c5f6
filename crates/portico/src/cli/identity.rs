//! `portico client …`, `portico user …`, `portico token issue`: operator tools over the
//! same database a running server uses. Every token issued is audited.

use super::open;
use crate::config::Config;
use crate::identity::clients::{ClientAuth, NewClient};
use crate::identity::users::NewUser;
use crate::identity::{AuthError, CLI_CLIENT};
use anyhow::{Context, bail};
use clap::Subcommand;
use portico_audit::{Actor, Interaction, Scope};
use portico_store::identity::PatientLink;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register (or replace) an OAuth client.
    Add {
        /// Client id (default: random).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        name: String,
        /// Exact redirect URI (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Scopes the client may be granted.
        #[arg(
            long,
            default_value = "openid fhirUser launch launch/patient offline_access online_access patient/*.rs user/*.rs"
        )]
        scope: String,
        /// A confidential client with a server-made secret (printed once).
        #[arg(long, conflicts_with_all = ["jwks", "jwks_url"])]
        secret: bool,
        /// A backend service authenticating with private_key_jwt: its public JWK Set file…
        #[arg(long)]
        jwks: Option<PathBuf>,
        /// …or URL.
        #[arg(long = "jwks-url", conflicts_with = "jwks")]
        jwks_url: Option<String>,
    },
    List,
    /// Remove a client; its grants and tokens stop working.
    Remove {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from PORTICO_NEW_PASSWORD or the first line of
    /// standard input.
    Add {
        #[arg(long)]
        username: String,
        /// patient, caregiver, clinician or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: Option<String>,
        /// The Patient this user is (role patient).
        #[arg(long)]
        patient: Option<String>,
        /// PATIENT[=RelatedPerson/ID]: a patient this caregiver acts for (repeatable).
        #[arg(long = "cares-for")]
        cares_for: Vec<String>,
        /// The Practitioner this clinician is.
        #[arg(long)]
        practitioner: Option<String>,
    },
    List,
    /// Disable a user (every session and token ends), or re-enable with --enable.
    Disable {
        username: String,
        #[arg(long)]
        enable: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue an access token (printed on the last line).
    Issue {
        #[arg(long, required_unless_present = "patient", conflicts_with = "patient")]
        user: Option<String>,
        #[arg(long)]
        patient: Option<String>,
        #[arg(long, default_value = CLI_CLIENT)]
        client: String,
        #[arg(long)]
        scope: String,
    },
}

fn auth_err(e: AuthError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

pub async fn client(config: Config, cmd: ClientCommand) -> anyhow::Result<()> {
    let state = open(&config).await?;
    let id = &state.identity;
    match cmd {
        ClientCommand::Add { id: client_id, name, redirect_uris, scope, secret, jwks, jwks_url } => {
            let auth = match (secret, jwks, jwks_url) {
                (true, _, _) => ClientAuth::Secret,
                (_, Some(path), _) => ClientAuth::Jwks(
                    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
                ),
                (_, _, Some(url)) => ClientAuth::JwksUrl(url),
                _ => ClientAuth::Public,
            };
            let (row, secret) = id
                .register_client(NewClient { client_id, name, redirect_uris, scopes: scope, auth })
                .await
                .map_err(auth_err)?;
            println!("client_id: {}", row.client_id);
            println!("auth: {}", row.auth_method);
            println!("scope: {}", row.scopes);
            if let Some(s) = secret {
                println!("client_secret (shown once): {s}");
            }
        }
        ClientCommand::List => {
            for c in id.store.clients_list().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    c.client_id,
                    c.auth_method,
                    if c.disabled { "disabled" } else { "active" },
                    c.name,
                    c.redirect_uris.join(",")
                );
            }
        }
        ClientCommand::Remove { id: client_id } => {
            if !id.store.client_remove(&client_id, crate::identity::now_ms()).await? {
                bail!("no client {client_id}");
            }
            println!("removed {client_id}; its grants are revoked");
        }
    }
    Ok(())
}

fn read_new_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("PORTICO_NEW_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn user(config: Config, cmd: UserCommand) -> anyhow::Result<()> {
    let state = open(&config).await?;
    let id = &state.identity;
    match cmd {
        UserCommand::Add { username, role, name, patient, cares_for, practitioner } => {
            let mut links: Vec<PatientLink> =
                patient.iter().map(|p| PatientLink { patient: p.clone(), via: None, name: None }).collect();
            for c in cares_for {
                let (p, via) = match c.split_once('=') {
                    Some((p, v)) => (p.to_string(), Some(v.to_string())),
                    None => (c, None),
                };
                links.push(PatientLink { patient: p, via, name: None });
            }
            let fhir_user = match (&patient, &practitioner, links.first().and_then(|l| l.via.clone())) {
                (Some(p), _, _) => Some(format!("Patient/{p}")),
                (_, Some(pr), _) => Some(format!("Practitioner/{pr}")),
                (_, _, Some(rp)) => Some(rp),
                _ => None,
            };
            let user = id
                .create_user(NewUser {
                    display_name: name.unwrap_or_else(|| username.clone()),
                    username,
                    password: read_new_password()?,
                    role,
                    fhir_user,
                    links,
                    totp_secret: None,
                })
                .await
                .map_err(auth_err)?;
            println!("created user {} ({}) id {}", user.username, user.role, user.id);
        }
        UserCommand::List => {
            for u in id.store.users_list().await? {
                let patients: Vec<&str> = u.links.iter().map(|l| l.patient.as_str()).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    u.username,
                    u.role,
                    if u.disabled { "disabled" } else { "active" },
                    u.fhir_user.unwrap_or_default(),
                    patients.join(",")
                );
            }
        }
        UserCommand::Disable { username, enable } => {
            let u = id.store.user_by_username(&username.to_ascii_lowercase()).await?.context("no such user")?;
            id.store.user_set_disabled(&u.id, !enable, crate::identity::now_ms()).await?;
            println!(
                "{} {}",
                u.username,
                if enable { "enabled" } else { "disabled; its sessions and grants are revoked" }
            );
        }
    }
    Ok(())
}

pub async fn token(config: Config, cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Issue { user, patient, client, scope } = cmd;
    let state = open(&config).await?;
    let id = &state.identity;
    let user = match user {
        Some(name) => Some(id.store.user_by_username(&name.to_ascii_lowercase()).await?.context("no such user")?),
        None => None,
    };
    if client != CLI_CLIENT && id.store.client_get(&client).await?.is_none() {
        bail!("no client {client}");
    }
    let origin = if config.auth.public_url.is_empty() {
        format!("http://{}", config.listen)
    } else {
        config.auth.public_url.clone()
    };
    let (resp, grant) = id
        .issue_operator_token(user.as_ref(), patient, &client, &scope, &format!("{origin}/fhir"))
        .await
        .map_err(auth_err)?;
    // The operator issued it: audited like any token issue, before it is handed out.
    let audit_scope = Scope::new(&uuid::Uuid::new_v4().to_string());
    let patients: Vec<String> = grant.patient.iter().cloned().collect();
    crate::server::oauth::audit::record(
        &audit_scope,
        Interaction::TokenIssue,
        Some(Actor::new("operator", "operator")),
        Some(&client),
        &patients,
        None,
    );
    state.audit.finish(&audit_scope, 200).await.map_err(|_| anyhow::anyhow!("the audit trail is unavailable"))?;
    println!("scope: {}", resp.scope);
    if let Some(p) = &resp.patient {
        println!("patient: {p}");
    }
    println!("expires_in: {}", resp.expires_in);
    println!("{}", resp.access_token);
    Ok(())
}
