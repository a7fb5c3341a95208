//! `cloudcode-server`: settings in, a [`Server`] out, served until a signal.

use clap::Parser;
use cloudcode_server::config::Config;
use cloudcode_server::server::Server;

fn main() -> anyhow::Result<()> {
    let file = cloudcode_server::config::config_file_path(std::env::args());
    if let Some(path) = &file {
        let settings = cloudcode_server::config::read_config_file(path)?;
        for (key, value) in settings {
            // Flags and the environment win over the file.
            if std::env::var_os(&key).is_none() {
                // SAFETY: no other thread exists yet; the runtime starts below.
                unsafe { std::env::set_var(key, value) };
            }
        }
    }
    let config = Config::parse();
    if config.print_new_signing_key {
        println!("{}", cloudcode_proto::token::TokenIssuer::generate()?.secret_base64());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "cloudcode_server=info".into()),
        )
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            if config.stop_sandboxes {
                let stopped = cloudcode_server::server::stop_sandboxes(config).await?;
                println!("sandboxes stopped: {stopped}");
                return Ok(());
            }
            let server = Server::build(config).await?;
            println!("cloudcode-server listening on {}", server.local_addr());
            println!("  IDE: {}", server.login_url());
            server.serve(signalled()).await
        })
}

/// Ctrl-C or SIGTERM (a service manager, `kubectl delete`).
async fn signalled() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
