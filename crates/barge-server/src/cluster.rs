//! Several `barge server`s on one PostgreSQL database (`--database-url`). Every one serves the
//! whole API; one leads: it holds the leader lease (a row in the database, timed by the
//! database's clock), runs the writer, the scheduler and the agents' endpoints, and its commits
//! are fenced with the lease's epoch. The others forward every request to the leader's
//! advertised URL and try to take the lease every third of its time to live, so a leader that
//! dies is replaced within about one TTL; the new one loads the state its predecessor
//! committed and carries on. A leader that cannot renew in time, or whose commit is fenced,
//! exits at once (`EXIT_DEPOSED`): it may no longer write, and its scheduler and agents must
//! not act on what it holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwapOption;
use barge_store::{Lease, LeaseKeeper, Store, StoreError};
use tokio::sync::watch;

use crate::plane::Leader;
use crate::{http, shutdown_signal, UpConfig, EXIT_DEPOSED};

/// Runs a lease operation on the blocking pool (the PostgreSQL client is synchronous).
async fn blocking<T: Send + 'static>(
    keeper: LeaseKeeper,
    op: impl FnOnce(&mut LeaseKeeper) -> Result<T, StoreError> + Send + 'static,
) -> anyhow::Result<(LeaseKeeper, Result<T, StoreError>)> {
    tokio::task::spawn_blocking(move || {
        let mut keeper = keeper;
        let result = op(&mut keeper);
        (keeper, result)
    })
    .await
    .context("a lease operation panicked")
}

pub(crate) async fn run(
    listener: tokio::net::TcpListener,
    endpoint: String,
    config: UpConfig,
    url: String,
) -> anyhow::Result<()> {
    let advertise = config.advertise_url.clone().unwrap_or(endpoint.clone());
    // Unique per process run: a restarted server is a new tenure with a new epoch.
    let holder = uuid::Uuid::new_v4().to_string();
    let (store, mut keeper) = tokio::task::spawn_blocking(move || {
        let store = Store::open_postgres(&url)?;
        let keeper = store.lease_keeper()?;
        Ok::<_, StoreError>((store, keeper))
    })
    .await
    .context("opening PostgreSQL panicked")??;
    let mut store = Some(store);

    let app = http::App {
        local: Arc::new(ArcSwapOption::empty()),
        leader_url: Arc::new(ArcSwapOption::empty()),
        console: Arc::new(barge_console::Console::new(
            config.security.access_keys.clone(),
            config.security.tls.is_some(),
        )),
    };
    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let server = {
        let (app, config) = (app.clone(), config.clone());
        tokio::spawn(async move {
            crate::serve_until(listener, app, &config, async move {
                let _ = stopping_rx.wait_for(|s| *s).await;
            })
            .await
        })
    };
    println!("Barge server at {endpoint}: AWS Batch and CloudWatch Logs, state in PostgreSQL");
    println!("  web console at {endpoint}{}", barge_console::PREFIX);
    println!(
        "  one of several servers on one database: it leads when it holds the lease (time to live {} ms), and forwards to the leader otherwise; advertised as {advertise}",
        config.lease_ttl_ms
    );

    let ttl = config.lease_ttl_ms;
    let mut tick = tokio::time::interval(Duration::from_millis((ttl / 3).max(1)));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut leading: Option<(Leader, Lease, Instant)> = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        match leading.take() {
            None => {
                let (h, a) = (holder.clone(), advertise.clone());
                let (k, taken) = blocking(keeper, move |k| k.try_acquire(&h, &a, ttl)).await?;
                keeper = k;
                match taken {
                    Ok(Some(lease)) => {
                        let mut mine = store.take().expect("the store is used once, by the leader");
                        mine.fence_with(lease.clone());
                        let leader = Leader::start(mine, &config).await?;
                        app.local.store(Some(Arc::new(leader.shared.clone())));
                        app.leader_url.store(None);
                        eprintln!("barge: leading (lease epoch {})", lease.epoch);
                        leading = Some((leader, lease, Instant::now()));
                    }
                    Ok(None) => {
                        let (k, who) = blocking(keeper, |k| k.current_leader()).await?;
                        keeper = k;
                        match who {
                            Ok(who) => app.leader_url.store(who.map(|l| Arc::new(l.url))),
                            Err(e) => tracing::warn!("cannot read who leads: {e}"),
                        }
                    }
                    Err(e) => tracing::warn!("cannot try for the leader lease: {e}"),
                }
            }
            Some((leader, lease, renewed_at)) => {
                let l = lease.clone();
                let (k, renewed) = blocking(keeper, move |k| k.renew(&l, ttl)).await?;
                keeper = k;
                match renewed {
                    Ok(true) => leading = Some((leader, lease, Instant::now())),
                    Ok(false) => deposed("another server took the leader lease"),
                    Err(e) if renewed_at.elapsed() >= Duration::from_millis(ttl) => {
                        deposed(&format!("the lease could not be renewed in time ({e})"))
                    }
                    Err(e) => {
                        tracing::warn!("renewing the leader lease failed, trying again: {e}");
                        leading = Some((leader, lease, renewed_at));
                    }
                }
            }
        }
    }

    eprintln!("barge: shutting down");
    if let Some((leader, _, _)) = &leading {
        leader.shared.agents.close();
    }
    let _ = stopping_tx.send(true);
    let _ = server.await;
    // The writer stops once every handle to it is gone; this one is the last outside it.
    app.local.store(None);
    let lease = match leading {
        Some((leader, lease, _)) => {
            leader.stop().await;
            Some(lease)
        }
        None => None,
    };
    // PostgreSQL's synchronous client must also be dropped off the async threads.
    let released = tokio::task::spawn_blocking(move || {
        // Another server may lead at once instead of after the lease's time to live.
        let released = lease.map(|lease| keeper.release(&lease));
        drop((keeper, store));
        released
    })
    .await
    .context("giving the lease up panicked")?;
    if let Some(Err(e)) = released {
        tracing::warn!("cannot give the leader lease up: {e}");
    }
    eprintln!("barge: stopped");
    Ok(())
}

/// A leader that is no longer one stops at once: see the module's comment.
fn deposed(why: &str) -> ! {
    eprintln!("barge: no longer the leader: {why}; exiting so that only the new leader acts");
    std::process::exit(EXIT_DEPOSED)
}
