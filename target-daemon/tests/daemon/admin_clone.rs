//! Snapshots, clones and clone jobs through `lunarctl` against an in-process lunard.

use crate::admin_support::*;
use rand::seq::SliceRandom;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn linked_clone_is_online_at_once_with_point_in_time_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(1)).await;
    let p = dir.path();
    ctl_json(
        p,
        &[
            "lun", "create", "src", "--size", "16M", "--target", TARGET, "--lun-id", "0",
        ],
    )
    .await;
    fill(&d, "src", 4, 1).await;
    let before = read(&d, "src", 4).await;

    // Clone of the live LUN: holds the data of the instant creation started.
    let job = ctl_json(
        p,
        &[
            "clone", "create", "--source", "src", "--name", "c1", "--target", TARGET, "--lun-id",
            "1",
        ],
    )
    .await;
    assert_eq!(job["state"], "completed");
    assert_eq!(job["mode"], "linked");
    assert_eq!(reported_luns(&d), vec![0, 1]);
    fill(&d, "src", 4, 99).await;
    assert_eq!(read(&d, "c1", 4).await, before);
    assert_ne!(read(&d, "src", 4).await, before);

    // Clone of a snapshot; own identity; source's size and block size.
    ctl_json(p, &["snapshot", "create", "src@s1"]).await;
    let after = read(&d, "src", 4).await;
    fill(&d, "src", 4, 50).await;
    ctl_json(
        p,
        &["clone", "create", "--source", "src@s1", "--name", "c2"],
    )
    .await;
    assert_eq!(read(&d, "c2", 4).await, after);
    let src = ctl_json(p, &["lun", "show", "src"]).await;
    let c2 = ctl_json(p, &["lun", "show", "c2"]).await;
    assert_ne!(src["naa"], c2["naa"]);
    assert_ne!(src["serial"], c2["serial"]);
    assert_eq!(c2["size_bytes"], src["size_bytes"]);
    assert_eq!(c2["block_size"], src["block_size"]);
    assert_eq!(c2["origin"], "src@s1");
    assert_eq!(c2["clone_mode"], "linked");
    assert!(c2["mappings"].as_array().unwrap().is_empty());

    let snaps = ctl_json(p, &["snapshot", "list", "src"]).await;
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    // Deleting the source with clones works; clones keep their data.
    ctl_json(p, &["lun", "delete", "src", "--recursive"]).await;
    assert_eq!(read(&d, "c1", 4).await, before);
    assert_eq!(read(&d, "c2", 4).await, after);
    assert_eq!(reported_luns(&d), vec![1]);
    let jobs = ctl_json(p, &["clone", "list"]).await;
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    let purged = ctl_json(p, &["clone", "list", "--purge"]).await;
    assert!(purged.as_array().unwrap().is_empty());
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_clone_hidden_until_complete_then_identical() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(1)).await;
    let p = dir.path();
    ctl_json(
        p,
        &[
            "lun", "create", "gold", "--size", "64M", "--target", TARGET, "--lun-id", "0",
        ],
    )
    .await;
    fill(&d, "gold", 32, 3).await;
    let gold = read(&d, "gold", 32).await;
    let job = ctl_json(
        p,
        &[
            "clone", "create", "--source", "gold", "--name", "vm1", "--mode", "full", "--target",
            TARGET, "--lun-id", "5",
        ],
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    // The source stays online and writable while the copy runs.
    fill(&d, "gold", 1, 200).await;
    loop {
        // The LUN's visibility is read first, the job's state after it: a job still not
        // completed after those reads was not completed while they were taken (a job's
        // state only moves forward), so the LUN must have been hidden then. Read the other
        // way round, the job can complete between the two reads and the LUN be rightly
        // online.
        let luns = reported_luns(&d);
        let l = ctl_json(p, &["lun", "show", "vm1"]).await;
        let jobs = ctl_json(p, &["clone", "list"]).await;
        let j = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id.as_str())
            .unwrap()
            .clone();
        match j["state"].as_str().unwrap() {
            "completed" => break,
            "creating" | "queued" => {
                // Never presented before completion.
                assert_eq!(luns, vec![0], "clone visible while {}", j["progress_pct"]);
                assert_eq!(l["state"], "creating", "{l}");
                let pct = j["progress_pct"].as_f64().unwrap();
                assert!((0.0..=100.0).contains(&pct));
            }
            other => panic!("job ended {other}: {j}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(reported_luns(&d), vec![0, 5]);
    assert_eq!(read(&d, "vm1", 32).await, gold);
    let l = ctl_json(p, &["lun", "show", "vm1"]).await;
    assert_eq!(l["state"], "online");
    assert_eq!(l["clone_mode"], "full");
    assert_eq!(l["shared_bytes"], 0, "a full clone shares nothing: {l}");
    // Independent of the source: deleting it frees the source's data only.
    ctl_json(p, &["lun", "delete", "gold"]).await;
    assert_eq!(read(&d, "vm1", 32).await, gold);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_mid_copy_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(2)).await;
    let p = dir.path();
    ctl_json(p, &["lun", "create", "big", "--size", "512M"]).await;
    fill(&d, "big", 256, 9).await;
    let used = d.pool().expect("local pool").status().used_bytes;
    let vols = d.pool().expect("local pool").status().volumes;
    ctl_json(
        p,
        &[
            "clone", "create", "--source", "big", "--name", "copy", "--mode", "full", "--target",
            TARGET,
        ],
    )
    .await;
    let c = ctl(p, &["--json", "clone", "cancel", "copy"]).await;
    // The copy may finish before the cancel reaches it: either before the cancel looks for
    // a running job (refused), or after it found one and before the copy saw the request
    // (the job is reported as it ended, completed). Nothing to check then on this machine.
    let finished_first = if c.code != 0 {
        assert!(c.stderr.contains("no running clone job"), "{}", c.stderr);
        true
    } else {
        c.json()["state"] == "completed"
    };
    if finished_first {
        eprintln!("copy finished before cancel; cancel path not exercised");
        assert_eq!(
            ctl_json(p, &["lun", "show", "copy"]).await["state"],
            "online"
        );
        d.shutdown().await.unwrap();
        return;
    }
    let j = c.json();
    assert_eq!(j["state"], "cancelled");
    ctl(p, &["lun", "show", "copy"])
        .await
        .fails_with("not found");
    assert!(reported_luns(&d).is_empty());
    assert_eq!(d.pool().expect("local pool").status().volumes, vols);
    assert_eq!(d.pool().expect("local pool").status().used_bytes, used);
    let check = ctl_json(p, &["pool", "check"]).await;
    assert_eq!(check["clean"], true);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_generations_deleted_in_any_order_free_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(1)).await;
    let p = dir.path();
    ctl_json(p, &["lun", "create", "g0", "--size", "8M"]).await;
    fill(&d, "g0", 2, 0).await;
    let mut names = vec!["g0".to_string()];
    let mut expect = vec![read(&d, "g0", 2).await];
    for g in 1..=10 {
        let name = format!("g{g}");
        let src = names.last().unwrap().clone();
        ctl_json(p, &["clone", "create", "--source", &src, "--name", &name]).await;
        // Each generation changes its first MiB.
        fill(&d, &name, 1, g as u8 * 10).await;
        names.push(name.clone());
        expect.push(read(&d, &name, 2).await);
    }
    for (n, e) in names.iter().zip(&expect) {
        assert_eq!(&read(&d, n, 2).await, e, "{n}");
    }
    ctl_json(p, &["lun", "delete", "g0"]).await;
    let mut rest: Vec<usize> = (1..=10).collect();
    rest.shuffle(&mut rand::thread_rng());
    for (k, &i) in rest.iter().enumerate() {
        ctl_json(p, &["lun", "delete", &names[i]]).await;
        for &j in &rest[k + 1..] {
            assert_eq!(
                read(&d, &names[j], 2).await,
                expect[j],
                "g{j} after deleting g{i}"
            );
        }
    }
    let st = ctl_json(p, &["pool", "status"]).await;
    assert_eq!(st["used_bytes"], 0, "{st}");
    assert_eq!(st["volumes"], 0);
    assert_eq!(ctl_json(p, &["pool", "check"]).await["clean"], true);
    d.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn consistency_group_split_and_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), ByteSize::gib(1)).await;
    let p = dir.path();
    ctl_json(p, &["lun", "create", "data", "--size", "8M"]).await;
    ctl_json(p, &["lun", "create", "log", "--size", "8M"]).await;
    fill(&d, "data", 1, 1).await;
    fill(&d, "log", 1, 2).await;
    let (d0, l0) = (read(&d, "data", 1).await, read(&d, "log", 1).await);
    let snaps = ctl_json(p, &["snapshot", "create", "--group", "cg1", "data", "log"]).await;
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    fill(&d, "data", 1, 3).await;
    let list = ctl_json(p, &["snapshot", "list"]).await;
    assert!(list.as_array().unwrap().iter().all(|s| s["group"] == "cg1"));
    ctl_json(
        p,
        &[
            "clone", "create", "--source", "data@cg1", "--name", "data-dr", "--target", TARGET,
            "--lun-id", "0",
        ],
    )
    .await;
    ctl_json(
        p,
        &["clone", "create", "--source", "log@cg1", "--name", "log-dr"],
    )
    .await;
    assert_eq!(read(&d, "data-dr", 1).await, d0);
    assert_eq!(read(&d, "log-dr", 1).await, l0);

    // Refresh on the source's current contents keeps NAA id and LUN number.
    let before = ctl_json(p, &["lun", "show", "data-dr"]).await;
    let now = read(&d, "data", 1).await;
    let after = ctl_json(p, &["clone", "refresh", "data-dr", "--source", "data"]).await;
    assert_eq!(read(&d, "data-dr", 1).await, now);
    assert_eq!(after["naa"], before["naa"]);
    // ...and the device server reports that same identity to hosts (VPD 83h).
    assert_eq!(device_naa(&d, 0), before["naa"].as_str().unwrap());
    assert_eq!(after["mappings"], before["mappings"]);
    assert_eq!(reported_luns(&d), vec![0]);

    // Split makes the clone independent while it stays online.
    ctl_json(p, &["clone", "split", "log-dr", "--wait"]).await;
    let l = ctl_json(p, &["lun", "show", "log-dr"]).await;
    assert_eq!(l["clone_mode"], "full");
    assert_eq!(l["shared_bytes"], 0);
    assert_eq!(read(&d, "log-dr", 1).await, l0);

    // Rollback restores the group point in time.
    ctl_json(p, &["snapshot", "rollback", "data@cg1"]).await;
    assert_eq!(read(&d, "data", 1).await, d0);
    ctl_json(p, &["snapshot", "delete", "--group", "cg1"]).await;
    assert!(ctl_json(p, &["snapshot", "list"])
        .await
        .as_array()
        .unwrap()
        .is_empty());
    d.shutdown().await.unwrap();
}
