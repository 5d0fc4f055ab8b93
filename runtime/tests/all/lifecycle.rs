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
