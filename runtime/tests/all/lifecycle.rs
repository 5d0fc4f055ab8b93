//! The sandbox lifecycle with the seed's persistence semantics: pause/connect/kill, timeouts, listing,
//! snapshots and forks, restarts, graceful shutdown, crashes, concurrency.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use stasis::lifecycle::{
    CreateRequest, LifecycleError, LifecyclePolicy, ListQuery, Manager, ManagerConfig, OnTimeout,
    SandboxState,
};
use stasis::{Runtime, RuntimeConfig, SandboxLimits};
use tempfile::TempDir;

/// A manager on a data directory inside `tmp`, with the `stateful` template registered.
fn manager_in(tmp: &TempDir, config: ManagerConfig) -> Result<Manager> {
    let mut runtime_config = RuntimeConfig::new(tmp.path().join("data"));
    runtime_config.limits = SandboxLimits {
        cpu_time_per_call: Duration::from_secs(2),
        ..SandboxLimits::default()
    };
    let runtime = Runtime::new(runtime_config)?;
    let (manager, _recovery) = Manager::open(runtime, config)?;
    manager.register_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?;
    Ok(manager)
}

fn manager() -> Result<(TempDir, Manager)> {
    let tmp = tempfile::tempdir()?;
    let manager = manager_in(&tmp, ManagerConfig::default())?;
    Ok((tmp, manager))
}

fn create(manager: &Manager, metadata: &[(&str, &str)]) -> Result<String> {
    let request = CreateRequest {
        template: "stateful".into(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..CreateRequest::default()
    };
    Ok(manager.create(request)?.id)
}

fn call(manager: &Manager, id: &str, handler: &str, request: &str) -> Result<String> {
    let bytes = manager.with_sandbox(id, |sandbox| sandbox.call(handler, request.as_bytes()))??;
    Ok(String::from_utf8(bytes)?)
}

#[test]
fn the_seed_flow() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let id = create(&manager, &[("user", "alice")])?;
    call(&manager, &id, "open", "/tmp/message.txt")?; // /tmp exists in every new sandbox
    call(&manager, &id, "put_file", "/tmp/message.txt\nhello")?;
    assert!(manager.pause(&id)?, "the first pause pauses");
    assert!(
        !manager.pause(&id)?,
        "a second pause reports it was already paused"
    );
    assert_eq!(manager.info(&id)?.state, SandboxState::Paused);
    assert!(matches!(
        manager.with_sandbox(&id, |_| ()),
        Err(LifecycleError::Paused(_))
    ));
    let connected = manager.connect(&id, Some(Duration::from_secs(60)))?;
    assert!(connected.resumed);
    assert_eq!(connected.info.state, SandboxState::Running);
    assert_eq!(
        call(&manager, &id, "get_file", "/tmp/message.txt")?,
        "hello"
    );
    manager.kill(&id)?;
    assert!(matches!(
        manager.kill(&id),
        Err(LifecycleError::NotFound(_))
    ));
    assert!(matches!(
        manager.info(&id),
        Err(LifecycleError::NotFound(_))
    ));
    Ok(())
}

#[test]
fn operations_after_a_kill_are_not_found_and_a_paused_kill_is_clean() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let running = create(&manager, &[])?;
    manager.kill(&running)?;
    assert!(matches!(
        manager.pause(&running),
        Err(LifecycleError::NotFound(_))
    ));
    assert!(matches!(
        manager.connect(&running, None),
        Err(LifecycleError::NotFound(_))
    ));
    assert!(matches!(
        manager.with_sandbox(&running, |_| ()),
        Err(LifecycleError::NotFound(_))
    ));
    assert!(matches!(
        manager.snapshot(&running, None),
        Err(LifecycleError::NotFound(_))
    ));
    let paused = create(&manager, &[])?;
    manager.pause(&paused)?;
    manager.kill(&paused)?;
    assert!(matches!(
        manager.connect(&paused, None),
        Err(LifecycleError::NotFound(_))
    ));
    assert!(manager.list(&ListQuery::default())?.items.is_empty());
    Ok(())
}

#[test]
fn unknown_and_malformed_ids_are_not_found() -> Result<()> {
    let (_tmp, manager) = manager()?;
    for id in ["nope", "../../etc", "0123456789abcdefghijklmno"] {
        assert!(
            matches!(manager.pause(id), Err(LifecycleError::NotFound(_))),
            "{id}"
        );
        assert!(
            matches!(manager.connect(id, None), Err(LifecycleError::NotFound(_))),
            "{id}"
        );
        assert!(
            matches!(manager.kill(id), Err(LifecycleError::NotFound(_))),
            "{id}"
        );
    }
    assert!(matches!(
        manager.create(CreateRequest {
            template: "no-such-template".into(),
            ..Default::default()
        }),
        Err(LifecycleError::UnknownTemplate(_))
    ));
    Ok(())
}

#[test]
fn connect_never_shortens_a_running_sandbox() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let request = CreateRequest {
        template: "stateful".into(),
        timeout: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    let info = manager.create(request)?;
    let connected = manager.connect(&info.id, Some(Duration::from_secs(10)))?;
    assert!(!connected.resumed);
    assert_eq!(
        connected.info.end_at, info.end_at,
        "a shorter timeout does not shorten it"
    );
    let longer = manager.connect(&info.id, Some(Duration::from_secs(3600)))?;
    assert!(
        longer.info.end_at > info.end_at,
        "a longer timeout extends it"
    );
    // set_timeout, unlike connect, sets the end time whatever it was.
    let shorter = manager.set_timeout(&info.id, Duration::from_secs(5))?;
    assert!(shorter.end_at < info.end_at);
    Ok(())
}

#[test]
fn a_paused_sandbox_timeout_counts_from_its_resume() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let id = create(&manager, &[])?;
    manager.pause(&id)?;
    manager.set_timeout(&id, Duration::from_secs(120))?;
    std::thread::sleep(Duration::from_millis(300));
    let before_resume = SystemTime::now();
    let connected = manager.connect(&id, None)?;
    let remaining = connected.info.end_at.duration_since(before_resume)?;
    assert!(
        remaining >= Duration::from_secs(119),
        "timeout restarted at resume: {remaining:?} left"
    );
    assert!(connected.info.started_at >= before_resume - Duration::from_millis(5));
    Ok(())
}

#[test]
fn list_filters_by_state_and_metadata() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let a = create(&manager, &[("team", "red"), ("env", "dev")])?;
    let b = create(&manager, &[("team", "red"), ("env", "prod")])?;
    let c = create(&manager, &[("team", "blue")])?;
    manager.pause(&b)?;
    let ids = |query: ListQuery| -> Result<Vec<String>> {
        Ok(manager
            .list(&query)?
            .items
            .into_iter()
            .map(|i| i.id)
            .collect())
    };
    assert_eq!(
        ids(ListQuery::default())?,
        [a.clone(), b.clone(), c.clone()]
    );
    assert_eq!(
        ids(ListQuery {
            states: vec![SandboxState::Paused],
            ..Default::default()
        })?,
        std::slice::from_ref(&b)
    );
    assert_eq!(
        ids(ListQuery {
            states: vec![SandboxState::Running],
            ..Default::default()
        })?,
        [a.clone(), c]
    );
    let red: BTreeMap<String, String> = [("team".into(), "red".into())].into();
    assert_eq!(
        ids(ListQuery {
            metadata: red.clone(),
            ..Default::default()
        })?,
        [a, b.clone()]
    );
    let red_paused = ListQuery {
        metadata: red,
        states: vec![SandboxState::Paused],
        ..Default::default()
    };
    assert_eq!(ids(red_paused)?, [b]);
    assert!(matches!(
        manager.list(&ListQuery {
            limit: Some(0),
            ..Default::default()
        }),
        Err(LifecycleError::Query(_))
    ));
    assert!(matches!(
        manager.list(&ListQuery {
            limit: Some(101),
            ..Default::default()
        }),
        Err(LifecycleError::Query(_))
    ));
    assert!(matches!(
        manager.list(&ListQuery {
            next_token: Some("garbage".into()),
            ..Default::default()
        }),
        Err(LifecycleError::Query(_))
    ));
    Ok(())
}

#[test]
fn pagination_stays_correct_while_sandboxes_come_and_go() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let survivors: Vec<String> = (0..7)
        .map(|_| create(&manager, &[("batch", "one")]))
        .collect::<Result<_>>()?;
    let doomed: Vec<String> = (0..3)
        .map(|_| create(&manager, &[("batch", "one")]))
        .collect::<Result<_>>()?;
    let mut seen = Vec::new();
    let mut query = ListQuery {
        limit: Some(3),
        ..Default::default()
    };
    let mut round = 0;
    loop {
        let page = manager.list(&query)?;
        seen.extend(page.items.into_iter().map(|i| i.id));
        // Between pages, sandboxes are created and killed.
        if round < doomed.len() {
            manager.kill(&doomed[round])?;
            create(&manager, &[("batch", "two")])?;
        }
        round += 1;
        match page.next_token {
            Some(token) => query.next_token = Some(token),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no duplicates: {seen:?}");
    for id in &survivors {
        assert!(
            seen.contains(id),
            "{id} existed throughout and must be listed"
        );
    }
    Ok(())
}

#[test]
fn killing_a_paused_sandbox_removes_its_files() -> Result<()> {
    let (tmp, manager) = manager()?;
    let id = create(&manager, &[])?;
    call(&manager, &id, "put_file", "/big.txt\nsome content")?;
    manager.pause(&id)?;
    let sandbox_dir = tmp.path().join("data/boxes").join(&id);
    assert!(sandbox_dir.join("state.blob").is_file());
    manager.kill(&id)?;
    assert!(
        !sandbox_dir.exists(),
        "everything of a killed sandbox is deleted"
    );
    Ok(())
}

#[test]
fn snapshot_forks_are_independent() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let id = create(&manager, &[("origin", "yes")])?;
    call(&manager, &id, "bump", "")?;
    call(&manager, &id, "put_file", "/shared.txt\nfrom the source")?;
    let snapshot = manager.snapshot(&id, Some("after-one-bump".into()))?;
    manager.kill(&id)?;
    assert_eq!(
        manager.list_snapshots().len(),
        1,
        "a snapshot outlives its source"
    );
    let forks = manager.fork(&snapshot.id, 10, CreateRequest::default())?;
    let ids: Vec<String> = forks
        .into_iter()
        .map(|f| f.map(|i| i.id))
        .collect::<Result<_, _>>()?;
    assert_eq!(ids.len(), 10);
    for (n, fork) in ids.iter().enumerate() {
        for _ in 0..n {
            call(&manager, fork, "bump", "")?;
        }
        call(&manager, fork, "put_file", &format!("/mine.txt\n{n}"))?;
    }
    for (n, fork) in ids.iter().enumerate() {
        assert_eq!(call(&manager, fork, "bump", "")?, format!("{0} {0}", n + 2));
        assert_eq!(
            call(&manager, fork, "get_file", "/mine.txt")?,
            n.to_string()
        );
        assert_eq!(
            call(&manager, fork, "get_file", "/shared.txt")?,
            "from the source"
        );
    }
    assert!(matches!(
        manager.fork(&snapshot.id, 0, CreateRequest::default()),
        Err(LifecycleError::ForkCount(0))
    ));
    assert!(matches!(
        manager.fork(&snapshot.id, 101, CreateRequest::default()),
        Err(LifecycleError::ForkCount(101))
    ));
    manager.delete_snapshot(&snapshot.id)?;
    assert!(matches!(
        manager.delete_snapshot(&snapshot.id),
        Err(LifecycleError::SnapshotNotFound(_))
    ));
    Ok(())
}

#[test]
fn paused_sandboxes_and_snapshots_survive_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (id, snapshot) = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let id = create(&manager, &[("keep", "me")])?;
        call(&manager, &id, "bump", "")?;
        call(&manager, &id, "put_file", "/note.txt\nsurvives")?;
        let snapshot = manager.snapshot(&id, None)?.id;
        manager.pause(&id)?;
        (id, snapshot)
    };
    let manager = manager_in(&tmp, ManagerConfig::default())?;
    let listed = manager.list(&ListQuery {
        states: vec![SandboxState::Paused],
        ..Default::default()
    })?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, id);
    assert_eq!(
        listed.items[0].metadata.get("keep").map(String::as_str),
        Some("me")
    );
    assert_eq!(manager.list_snapshots()[0].id, snapshot);
    manager.connect(&id, None)?;
    assert_eq!(call(&manager, &id, "bump", "")?, "2 2");
    assert_eq!(call(&manager, &id, "get_file", "/note.txt")?, "survives");
    Ok(())
}

#[test]
fn graceful_shutdown_pauses_running_sandboxes_with_their_memory() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let id = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let id = create(&manager, &[])?;
        for _ in 0..5 {
            call(&manager, &id, "bump", "")?;
        }
        let report = manager.shutdown();
        assert_eq!(report.paused, std::slice::from_ref(&id));
        assert!(report.failed.is_empty());
        id
    };
    let manager = manager_in(&tmp, ManagerConfig::default())?;
    assert_eq!(manager.info(&id)?.state, SandboxState::Paused);
    manager.connect(&id, None)?;
    assert_eq!(call(&manager, &id, "bump", "")?, "6 6");
    Ok(())
}

#[test]
fn a_crash_reports_running_sandboxes_as_lost_and_keeps_paused_ones() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (running, paused) = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let running = create(&manager, &[])?;
        let paused = create(&manager, &[])?;
        manager.pause(&paused)?;
        // Dropped without shutdown: what a crash leaves behind.
        (running, paused)
    };
    let runtime = Runtime::new(RuntimeConfig::new(tmp.path().join("data")))?;
    let (manager, recovery) = Manager::open(runtime, ManagerConfig::default())?;
    manager.register_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?;
    assert_eq!(recovery.lost, std::slice::from_ref(&running));
    assert_eq!(recovery.paused, std::slice::from_ref(&paused));
    assert_eq!(manager.info(&running)?.state, SandboxState::Lost);
    assert!(matches!(
        manager.connect(&running, None),
        Err(LifecycleError::Lost(_))
    ));
    manager.kill(&running)?;
    manager.connect(&paused, None)?;
    Ok(())
}

#[test]
fn timeout_kills_by_default() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let request = CreateRequest {
        template: "stateful".into(),
        timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let id = manager.create(request)?.id;
    wait_until(Duration::from_secs(10), || {
        matches!(manager.info(&id), Err(LifecycleError::NotFound(_)))
    })
    .context("the sandbox should have been killed by its timeout")?;
    Ok(())
}

#[test]
fn auto_pause_on_timeout_keeps_every_acknowledged_write() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let policy = LifecyclePolicy {
        on_timeout: OnTimeout::Pause,
        ..LifecyclePolicy::default()
    };
    let request = CreateRequest {
        template: "stateful".into(),
        timeout: Some(Duration::from_millis(700)),
        lifecycle: policy,
        ..Default::default()
    };
    let id = manager.create(request)?.id;
    call(&manager, &id, "open", "/journal.txt")?;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (manager, id, acknowledged, stop) = (
            manager.clone(),
            id.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            for n in 0u32.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match manager.with_sandbox(&id, |s| s.call("write", format!("{n},").as_bytes())) {
                    Ok(Ok(_)) => acknowledged.lock().expect("not poisoned").push(n),
                    _ => break, // paused: the write was not acknowledged
                }
            }
        })
    };
    wait_until(Duration::from_secs(10), || {
        manager
            .info(&id)
            .map(|i| i.state == SandboxState::Paused)
            .unwrap_or(false)
    })
    .context("the timeout should have paused the sandbox")?;
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer thread");
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    assert!(
        acknowledged.len() > 10,
        "the writer made progress before the pause"
    );
    manager.connect(&id, None)?;
    let journal = call(&manager, &id, "get_file", "/journal.txt")?;
    let written: Vec<u32> = journal
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    assert_eq!(
        written, acknowledged,
        "every acknowledged write is there, in order"
    );
    Ok(())
}

#[test]
fn auto_resume_resumes_on_activity() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let policy = LifecyclePolicy {
        auto_resume: true,
        ..LifecyclePolicy::default()
    };
    let id = manager
        .create(CreateRequest {
            template: "stateful".into(),
            lifecycle: policy,
            ..Default::default()
        })?
        .id;
    call(&manager, &id, "bump", "")?;
    manager.pause(&id)?;
    assert_eq!(
        call(&manager, &id, "bump", "")?,
        "2 2",
        "the call resumed the sandbox first"
    );
    assert_eq!(manager.info(&id)?.state, SandboxState::Running);
    Ok(())
}

#[test]
fn idle_timeout_applies_the_policy_without_activity() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let policy = LifecyclePolicy {
        on_timeout: OnTimeout::Pause,
        idle_timeout: Some(Duration::from_millis(400)),
        ..LifecyclePolicy::default()
    };
    let id = manager
        .create(CreateRequest {
            template: "stateful".into(),
            lifecycle: policy,
            ..Default::default()
        })?
        .id;
    wait_until(Duration::from_secs(10), || {
        manager
            .info(&id)
            .map(|i| i.state == SandboxState::Paused)
            .unwrap_or(false)
    })
    .context("the idle timeout should have paused the sandbox")?;
    Ok(())
}

#[test]
fn a_pause_waits_for_a_call_in_flight_then_fails_busy() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let config = ManagerConfig {
        busy_deadline: Duration::from_millis(200),
        ..ManagerConfig::default()
    };
    let manager = manager_in(&tmp, config)?;
    let id = create(&manager, &[])?;
    let spinner = {
        let (manager, id) = (manager.clone(), id.clone());
        // Runs until the 2 s CPU limit stops it.
        std::thread::spawn(move || manager.with_sandbox(&id, |s| s.call("spin", b"").is_err()))
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(manager.pause(&id), Err(LifecycleError::Busy(_))));
    assert!(
        spinner.join().expect("spinner thread")?,
        "the runaway call ended in an error"
    );
    assert!(
        manager.pause(&id)?,
        "once the call is over the pause goes through"
    );
    Ok(())
}

#[test]
fn global_limit_on_running_sandboxes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let manager = manager_in(
        &tmp,
        ManagerConfig {
            max_running: 2,
            ..ManagerConfig::default()
        },
    )?;
    let first = create(&manager, &[])?;
    create(&manager, &[])?;
    assert!(matches!(
        create(&manager, &[])
            .unwrap_err()
            .downcast::<LifecycleError>()?,
        LifecycleError::Limit { .. }
    ));
    manager.pause(&first)?;
    create(&manager, &[])?;
    assert!(matches!(
        manager.connect(&first, None),
        Err(LifecycleError::Limit { .. })
    ));
    Ok(())
}

/// E2B #884: files lost after the second resume. A hundred cycles, memory and files mutated each time.
#[test]
fn a_hundred_pause_resume_cycles() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let id = create(&manager, &[])?;
    for cycle in 1..=100u32 {
        assert_eq!(call(&manager, &id, "bump", "")?, format!("{cycle} {cycle}"));
        call(
            &manager,
            &id,
            "put_file",
            &format!("/cycles/{cycle}.txt\n{cycle}"),
        )?;
        if cycle > 1 && cycle % 3 == 0 {
            call(
                &manager,
                &id,
                "remove_file",
                &format!("/cycles/{}.txt", cycle - 1),
            )?;
        }
        manager.pause(&id)?;
        manager.connect(&id, None)?;
    }
    for cycle in 1..=100u32 {
        let removed = cycle % 3 == 2 && cycle < 100;
        let content = manager.with_sandbox(&id, |s| {
            s.call("get_file", format!("/cycles/{cycle}.txt").as_bytes())
        })?;
        assert_eq!(content.is_err(), removed, "file {cycle}");
    }
    Ok(())
}

fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("condition not met within {limit:?}")
}

#[test]
fn an_exported_blob_imports_into_another_manager_as_a_paused_sandbox() -> Result<()> {
    let (_tmp, source) = manager()?;
    let id = create(&source, &[("moved", "yes")])?;
    call(&source, &id, "bump", "")?;
    call(&source, &id, "put_file", "/note.txt\ntravels")?;
    assert!(matches!(
        source.export_blob(&id),
        Err(LifecycleError::Running(_))
    ));
    source.pause(&id)?;
    let mut blob = Vec::new();
    std::io::Read::read_to_end(&mut source.export_blob(&id)?, &mut blob)?;

    let (_tmp2, target) = manager()?;
    let imported = target.import_blob(&blob)?;
    assert_ne!(imported.id, id);
    assert_eq!(imported.state, SandboxState::Paused);
    assert_eq!(imported.template, "stateful");
    assert_eq!(
        imported.metadata.get("moved").map(String::as_str),
        Some("yes")
    );
    assert!(target.connect(&imported.id, None)?.resumed);
    assert_eq!(call(&target, &imported.id, "bump", "")?, "2 2");
    assert_eq!(
        call(&target, &imported.id, "get_file", "/note.txt")?,
        "travels"
    );

    // A flipped byte is refused before anything is stored.
    let mut corrupt = blob.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    assert!(matches!(
        target.import_blob(&corrupt),
        Err(LifecycleError::InvalidBlob(_))
    ));
    // A manager without the blob's template refuses it too.
    let tmp3 = tempfile::tempdir()?;
    let (bare, _) = Manager::open(
        Runtime::new(RuntimeConfig::new(tmp3.path().join("data")))?,
        ManagerConfig::default(),
    )?;
    assert!(matches!(
        bare.import_blob(&blob),
        Err(LifecycleError::UnknownModule { .. })
    ));
    assert_eq!(target.list(&ListQuery::default())?.items.len(), 1);
    Ok(())
}

#[test]
fn owners_filter_listings_and_adoption_survives_a_restart() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (unowned, mine) = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let unowned = create(&manager, &[])?;
        let mine = manager
            .create(CreateRequest {
                template: "stateful".into(),
                owner: Some("me".into()),
                ..CreateRequest::default()
            })?
            .id;
        let theirs = ListQuery {
            owner: Some("them".into()),
            ..Default::default()
        };
        assert!(manager.list(&theirs)?.items.is_empty());
        let all = manager.list(&ListQuery::default())?;
        assert_eq!(all.items.len(), 2);
        // A snapshot belongs to its sandbox's owner.
        assert_eq!(manager.snapshot(&mine, None)?.owner.as_deref(), Some("me"));
        manager.pause(&unowned)?;
        manager.pause(&mine)?;
        (unowned, mine)
    };
    let manager = manager_in(&tmp, ManagerConfig::default())?;
    assert_eq!(manager.info(&unowned)?.owner, None);
    // The unowned sandbox is adopted; the owned one and its snapshot keep their owner.
    assert_eq!(manager.adopt_unowned("them")?, 1);
    assert_eq!(manager.adopt_unowned("them")?, 0);
    drop(manager);
    let manager = manager_in(&tmp, ManagerConfig::default())?;
    let ids = |owner: &str| -> Result<Vec<String>> {
        let query = ListQuery {
            owner: Some(owner.into()),
            ..Default::default()
        };
        Ok(manager
            .list(&query)?
            .items
            .into_iter()
            .map(|i| i.id)
            .collect())
    };
    assert_eq!(ids("them")?, [unowned]);
    assert_eq!(ids("me")?, [mine]);
    assert!(
        manager
            .list_snapshots()
            .iter()
            .all(|s| s.owner.as_deref() == Some("me"))
    );
    Ok(())
}

// The index of the records (`lifecycle::catalog`): a start reads a snapshot and a journal, not every
// sandbox's files; it is rebuilt from the record files when missing or damaged, and never trusted when
// damaged.

/// A manager on `tmp`'s data directory with its recovery report: what a restart after a crash finds
/// when the previous manager was dropped without a shutdown.
fn open_in(tmp: &TempDir, config: ManagerConfig) -> Result<(Manager, stasis::lifecycle::Recovery)> {
    let runtime = Runtime::new(RuntimeConfig::new(tmp.path().join("data")))?;
    let (manager, recovery) = Manager::open(runtime, config)?;
    manager.register_template("stateful", &stasis_guests::bytes(stasis_guests::STATEFUL))?;
    Ok((manager, recovery))
}

fn index_dir(tmp: &TempDir) -> std::path::PathBuf {
    tmp.path().join("data/index")
}

/// The journal files, oldest first.
fn journals(tmp: &TempDir) -> Result<Vec<std::path::PathBuf>> {
    let mut found: Vec<_> = std::fs::read_dir(index_dir(tmp))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("journal-"))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn ids(manager: &Manager, states: &[SandboxState]) -> Result<Vec<String>> {
    let mut query = ListQuery {
        states: states.to_vec(),
        ..Default::default()
    };
    let mut all = Vec::new();
    loop {
        let page = manager.list(&query)?;
        all.extend(page.items.into_iter().map(|i| i.id));
        match page.next_token {
            Some(token) => query.next_token = Some(token),
            None => break,
        }
    }
    all.sort();
    Ok(all)
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

/// What the tests of the index set up: two paused sandboxes (one with a bumped counter), one that was
/// running at the "crash", one killed, and changes after the last snapshot.
struct Scene {
    paused: Vec<String>,
    running: String,
    killed: String,
}

fn scene(tmp: &TempDir) -> Result<Scene> {
    let manager = manager_in(tmp, ManagerConfig::default())?;
    let first = create(&manager, &[("k", "a")])?;
    call(&manager, &first, "bump", "")?;
    manager.pause(&first)?;
    let second = create(&manager, &[("k", "b")])?;
    manager.pause(&second)?;
    let killed = create(&manager, &[])?;
    manager.pause(&killed)?;
    // Everything so far in the snapshot; what follows only in the journal.
    manager.compact_index()?;
    manager.connect(&second, None)?;
    manager.pause(&second)?;
    manager.kill(&killed)?;
    let running = create(&manager, &[])?;
    // Dropped without a shutdown: a crash.
    Ok(Scene {
        paused: sorted(vec![first, second]),
        running,
        killed,
    })
}

/// After a start on `tmp`: every sandbox of the scene is where it was, and the paused ones resume with
/// their memory.
fn check_scene(manager: &Manager, scene: &Scene) -> Result<()> {
    assert_eq!(ids(manager, &[SandboxState::Paused])?, scene.paused);
    assert_eq!(
        ids(manager, &[SandboxState::Lost])?,
        std::slice::from_ref(&scene.running)
    );
    assert!(matches!(
        manager.info(&scene.killed),
        Err(LifecycleError::NotFound(_))
    ));
    let first = manager
        .list(&ListQuery {
            metadata: BTreeMap::from([("k".to_owned(), "a".to_owned())]),
            ..Default::default()
        })?
        .items;
    assert_eq!(first.len(), 1);
    manager.connect(&first[0].id, None)?;
    assert_eq!(call(manager, &first[0].id, "bump", "")?, "2 2");
    Ok(())
}

#[test]
fn a_start_finds_changes_written_after_the_snapshot_in_the_journal() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let scene = scene(&tmp)?;
    let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(recovery.index.rebuilt, None);
    assert_eq!(recovery.index.loaded, 3, "the snapshot: three paused");
    // A resume, a pause, a kill and a create.
    assert_eq!(recovery.index.replayed, 4, "{:?}", recovery.index);
    assert_eq!(sorted(recovery.paused), scene.paused);
    assert_eq!(recovery.lost, std::slice::from_ref(&scene.running));
    check_scene(&manager, &scene)
}

#[test]
fn the_index_is_rebuilt_from_the_record_files_when_it_is_deleted() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let scene = scene(&tmp)?;
    std::fs::remove_dir_all(index_dir(&tmp))?;
    let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(recovery.index.rebuilt.as_deref(), Some("there is no index"));
    assert!(recovery.unreadable.is_empty(), "{:?}", recovery.unreadable);
    check_scene(&manager, &scene)?;
    drop(manager);
    // Rebuilt once: the next start loads it.
    let (_manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(recovery.index.rebuilt, None);
    Ok(())
}

/// Replaces the byte `at` bytes into `path` (from its end when negative) with its complement.
fn flip(path: &std::path::Path, at: i64) -> Result<()> {
    let mut bytes = std::fs::read(path)?;
    let at = if at < 0 { bytes.len() as i64 + at } else { at } as usize;
    bytes[at] = !bytes[at];
    std::fs::write(path, bytes)?;
    Ok(())
}

#[test]
fn a_damaged_index_is_detected_and_rebuilt_losing_nothing() -> Result<()> {
    type Damage = fn(&TempDir) -> Result<()>;
    let cases: [(&str, &str, Damage); 5] = [
        ("snapshot byte", "checksum", |tmp| {
            flip(&index_dir(tmp).join("snapshot"), 200)
        }),
        ("snapshot cut", "cut short", |tmp| {
            let path = index_dir(tmp).join("snapshot");
            let len = std::fs::metadata(&path)?.len();
            std::fs::File::options()
                .write(true)
                .open(&path)?
                .set_len(len / 2)?;
            Ok(())
        }),
        ("journal byte", "checksum", |tmp| {
            // Inside the first change, with more after it: damage, not a torn append.
            flip(&journals(tmp)?[0], 60)
        }),
        ("journal deleted", "missing", |tmp| {
            std::fs::remove_file(&journals(tmp)?[0])?;
            Ok(())
        }),
        ("not an index", "not an index file", |tmp| {
            std::fs::write(index_dir(tmp).join("snapshot"), b"{\"records\": []}")?;
            Ok(())
        }),
    ];
    for (name, why, damage) in cases {
        let tmp = tempfile::tempdir()?;
        let scene = scene(&tmp)?;
        damage(&tmp)?;
        let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
        let rebuilt = recovery
            .index
            .rebuilt
            .with_context(|| format!("{name}: the damage went unnoticed"))?;
        assert!(rebuilt.contains(why), "{name}: {rebuilt}");
        check_scene(&manager, &scene).with_context(|| name.to_owned())?;
    }
    Ok(())
}

#[test]
fn a_torn_journal_tail_is_dropped_and_appends_continue_after_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let scene = scene(&tmp)?;
    // An append a crash cut short: a valid frame header claiming 100 bytes, and only 10 of them.
    let mut torn = 100u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&0u32.to_le_bytes());
    let header_crc = crc32fast::hash(&torn);
    torn.extend_from_slice(&header_crc.to_le_bytes());
    torn.extend_from_slice(&[b'{'; 10]);
    let journal = journals(&tmp)?.pop().context("a journal")?;
    std::io::Write::write_all(
        &mut std::fs::File::options().append(true).open(&journal)?,
        &torn,
    )?;
    let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(recovery.index.rebuilt, None);
    assert!(
        recovery
            .index
            .torn_tail
            .as_deref()
            .is_some_and(|t| t.contains("cut short")),
        "{:?}",
        recovery.index
    );
    check_scene(&manager, &scene)?;
    // The torn bytes were cut off before the next append, so what follows is read back.
    let later = create(&manager, &[])?;
    manager.pause(&later)?;
    drop(manager);
    let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(
        (recovery.index.rebuilt, recovery.index.torn_tail),
        (None, None)
    );
    assert!(ids(&manager, &[SandboxState::Paused])?.contains(&later));
    Ok(())
}

#[test]
fn the_journal_wins_over_a_record_file_a_crash_left_behind_it() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let id = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let id = create(&manager, &[])?;
        manager.pause(&id)?;
        let record = tmp.path().join("data/boxes").join(&id).join("record.json");
        let before = std::fs::read(&record)?;
        manager.set_timeout(&id, Duration::from_secs(4242))?;
        // A crash after the journal's append and before the record file was rewritten.
        std::fs::write(&record, before)?;
        id
    };
    let (manager, _) = open_in(&tmp, ManagerConfig::default())?;
    let info = manager.connect(&id, None)?.info;
    assert_eq!(
        info.end_at.duration_since(info.started_at)?,
        Duration::from_secs(4242)
    );
    Ok(())
}

#[test]
fn a_start_reads_no_record_file_of_a_paused_sandbox() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let paused = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let mut paused = Vec::new();
        for _ in 0..3 {
            let id = create(&manager, &[("n", "1")])?;
            call(&manager, &id, "bump", "")?;
            manager.pause(&id)?;
            paused.push(id);
        }
        paused
    };
    // Were a start to read them, these would be reported unreadable (as a rebuild does below).
    for id in &paused {
        std::fs::write(
            tmp.path().join("data/boxes").join(id).join("record.json"),
            b"garbage",
        )?;
    }
    let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert!(recovery.unreadable.is_empty(), "{:?}", recovery.unreadable);
    assert_eq!(
        ids(&manager, &[SandboxState::Paused])?,
        sorted(paused.clone())
    );
    // A resume needs only the index's record, and rewrites the file.
    manager.connect(&paused[0], None)?;
    assert_eq!(call(&manager, &paused[0], "bump", "")?, "2 2");
    drop(manager);
    std::fs::remove_dir_all(index_dir(&tmp))?;
    let (_manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(recovery.unreadable.len(), 2, "{:?}", recovery.unreadable);
    Ok(())
}

#[test]
fn a_rebuild_refuses_a_record_whose_id_is_not_its_directory() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let id = {
        let manager = manager_in(&tmp, ManagerConfig::default())?;
        let id = create(&manager, &[])?;
        manager.pause(&id)?;
        id
    };
    let boxes = tmp.path().join("data/boxes");
    // A directory copied under another name: its record's id would name the other one's files.
    let copy = stasis::lifecycle::id::new_id("");
    std::fs::create_dir(boxes.join(&copy))?;
    std::fs::copy(
        boxes.join(&id).join("record.json"),
        boxes.join(&copy).join("record.json"),
    )?;
    std::fs::remove_dir_all(index_dir(&tmp))?;
    let (manager, recovery) = open_in(&tmp, ManagerConfig::default())?;
    assert_eq!(recovery.unreadable.len(), 1, "{:?}", recovery.unreadable);
    assert!(
        recovery.unreadable[0]
            .1
            .contains("not its directory's name")
    );
    assert_eq!(ids(&manager, &[SandboxState::Paused])?, [id]);
    Ok(())
}

#[test]
fn frequent_compactions_under_concurrent_changes_lose_nothing() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let config = ManagerConfig {
        compact_journal_after: Some(3),
        ..ManagerConfig::default()
    };
    let expected = {
        let manager = manager_in(&tmp, config.clone())?;
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let manager = manager.clone();
                std::thread::spawn(move || -> Result<Vec<String>> {
                    let mut kept = Vec::new();
                    for i in 0..6 {
                        let id = create(&manager, &[("thread", &t.to_string())])?;
                        manager.pause(&id)?;
                        if i % 3 == 0 {
                            manager.kill(&id)?;
                        } else {
                            manager.connect(&id, None)?;
                            manager.pause(&id)?;
                            kept.push(id);
                        }
                    }
                    Ok(kept)
                })
            })
            .collect();
        let mut kept = Vec::new();
        for thread in threads {
            kept.extend(
                thread
                    .join()
                    .map_err(|_| anyhow::anyhow!("thread panicked"))??,
            );
        }
        assert_eq!(
            ids(&manager, &[SandboxState::Paused])?,
            sorted(kept.clone())
        );
        sorted(kept)
    };
    let (manager, recovery) = open_in(&tmp, config)?;
    assert_eq!(recovery.index.rebuilt, None);
    assert!(recovery.index.replayed <= 3, "{:?}", recovery.index);
    assert_eq!(ids(&manager, &[SandboxState::Paused])?, expected);
    assert!(journals(&tmp)?.len() <= 2);
    Ok(())
}

#[test]
fn the_disk_floor_refuses_a_pause_before_writing_anything() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let manager = manager_in(
        &tmp,
        ManagerConfig {
            min_free_disk: u64::MAX,
            ..ManagerConfig::default()
        },
    )?;
    let id = create(&manager, &[])?;
    call(&manager, &id, "bump", "")?;
    let error = manager.pause(&id).expect_err("no disk left");
    assert!(
        matches!(
            error,
            LifecycleError::InsufficientDisk {
                floor: u64::MAX,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("not enough free disk space"));
    // Nothing was written, and the sandbox runs on.
    assert!(
        !tmp.path()
            .join("data/boxes")
            .join(&id)
            .join("state.blob")
            .exists()
    );
    assert_eq!(manager.info(&id)?.state, SandboxState::Running);
    assert_eq!(call(&manager, &id, "bump", "")?, "2 2");
    // A shutdown pauses anyway: the sandbox would be lost otherwise.
    let report = manager.shutdown();
    assert_eq!(report.paused, std::slice::from_ref(&id));
    drop(manager);
    let manager = manager_in(&tmp, ManagerConfig::default())?;
    assert_eq!(manager.info(&id)?.state, SandboxState::Paused);
    let mut blob = Vec::new();
    std::io::Read::read_to_end(&mut manager.export_blob(&id)?, &mut blob)?;
    drop(manager);
    // An import is a pause too.
    let manager = manager_in(
        &tmp,
        ManagerConfig {
            min_free_disk: u64::MAX,
            ..ManagerConfig::default()
        },
    )?;
    assert!(matches!(
        manager.import_blob(&blob),
        Err(LifecycleError::InsufficientDisk { .. })
    ));
    Ok(())
}

#[test]
fn the_paused_limit_is_counted_by_the_index() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let manager = manager_in(
        &tmp,
        ManagerConfig {
            max_paused: 1,
            ..ManagerConfig::default()
        },
    )?;
    let (a, b) = (create(&manager, &[])?, create(&manager, &[])?);
    manager.pause(&a)?;
    assert_eq!(manager.count(SandboxState::Paused), 1);
    assert!(matches!(
        manager.pause(&b),
        Err(LifecycleError::Limit {
            what: "paused sandboxes",
            limit: 1
        })
    ));
    assert_eq!(manager.info(&b)?.state, SandboxState::Running);
    manager.kill(&a)?;
    assert_eq!(manager.count(SandboxState::Paused), 0);
    manager.pause(&b)?;
    Ok(())
}

#[test]
fn a_timeout_moved_later_is_not_applied_at_the_earlier_time() -> Result<()> {
    let (_tmp, manager) = manager()?;
    let id = manager
        .create(CreateRequest {
            template: "stateful".into(),
            timeout: Some(Duration::from_millis(200)),
            ..CreateRequest::default()
        })?
        .id;
    manager.set_timeout(&id, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(500));
    manager.reap();
    assert_eq!(manager.info(&id)?.state, SandboxState::Running);
    // Moved earlier again, it is applied.
    manager.set_timeout(&id, Duration::ZERO)?;
    wait_until(Duration::from_secs(5), || manager.info(&id).is_err())?;
    Ok(())
}

/// The stored network policy governs the live sandbox's outbound connections: from its creation, when it
/// is replaced while the sandbox runs, and after a resume when it was replaced while the sandbox was
/// paused.
#[test]
fn the_network_policy_is_enforced_from_create_through_updates_and_resumes() -> Result<()> {
    use stasis::EgressPolicy;
    use stasis::lifecycle::network::NetworkPolicy;
    let (_tmp, manager) = manager()?;
    let allowing = NetworkPolicy {
        allow_out: Some(vec!["127.0.0.1".into()]),
        allow_internet_access: Some(false),
        ..NetworkPolicy::default()
    };
    let request = CreateRequest {
        template: "stateful".into(),
        network: Some(allowing.clone()),
        ..CreateRequest::default()
    };
    let id = manager.create(request)?.id;
    let policy = |manager: &Manager| manager.with_sandbox(&id, |s| s.egress_policy());
    let expected = EgressPolicy {
        allow_internet: false,
        allow: vec!["127.0.0.1/32".parse()?],
        deny: Vec::new(),
    };
    assert_eq!(policy(&manager)?, expected);
    manager.set_network(&id, None)?;
    assert_eq!(policy(&manager)?, EgressPolicy::default());
    assert!(manager.pause(&id)?);
    manager.set_network(&id, Some(allowing))?;
    manager.connect(&id, Some(Duration::from_secs(60)))?;
    assert_eq!(policy(&manager)?, expected);
    Ok(())
}
