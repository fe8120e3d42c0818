//! Clones and clone jobs.
//!
//! A linked clone is instant: the pool clones the source's point in time and the LUN is
//! online at once. A full clone is a hidden linked clone plus a background split that copies
//! every shared chunk; the LUN is never mapped (so never in REPORT LUNS) until the copy has
//! finished. Cancelling or failing removes the half clone. The job and the hidden LUN are
//! persisted *before* the pool is touched, so after a crash (`kill -9`) the next start finds
//! the interrupted job, removes the half clone and reports the job failed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use storage_core::{Pool, StorageError};

use super::state::{CloneJobRecord, CloneMode, JobState, LunRecord, LunStatus, State};
use super::view::CloneJobView;
use super::{
    check_name, free_lun_id, lun_rec, mappings_of, now_unix, online, parse_guarantee, JobCtl,
    LunManager, LunView, MgrError, MgrResult, ObjectKind, UsedBy,
};

/// How often a running job's progress is sampled.
const POLL: Duration = Duration::from_millis(100);

/// Parameters of `clone create`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CloneCreate {
    /// `lun` (its current contents) or `lun@snap`.
    pub source: String,
    /// New LUN name.
    pub name: String,
    /// `linked` (default) or `full`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Map the clone into this target when it is complete...
    #[serde(default)]
    pub target: Option<String>,
    /// ...at this LUN number.
    #[serde(default)]
    pub lun_id: Option<u64>,
    /// Guarantee (default: the source's).
    #[serde(default)]
    pub guarantee: Option<String>,
    /// Add the initiators allowed on the source's targets to the clone's target ACL.
    #[serde(default)]
    pub copy_acl: bool,
    /// Export the clone read-only (default: as the source).
    #[serde(default)]
    pub read_only: Option<bool>,
    /// The pool the clone is wanted in: must be the source's (a clone shares chunks with
    /// its origin); default: the source's.
    #[serde(default)]
    pub pool: Option<String>,
}

impl LunManager {
    /// Which non-final job uses `lun` as source or destination, if any.
    pub(crate) fn job_touching(&self, st: &State, lun: &str) -> Option<String> {
        st.clone_jobs
            .iter()
            .filter(|j| !j.state.is_final())
            .find(|j| {
                j.destination == lun || j.source == lun || j.source.split('@').next() == Some(lun)
            })
            .map(|j| j.id.clone())
    }

    /// Starts a clone. Linked clones are complete when this returns; full clones return a
    /// `creating` job whose progress `clone list` shows.
    pub async fn clone_create(self: &Arc<Self>, req: CloneCreate) -> MgrResult<CloneJobView> {
        let mut st = self.lock().await;
        // A standby gateway (no pool open) refuses before it records anything; with some
        // pool open, the source's pool is asked below, before the job is recorded.
        if req.pool.is_none() && self.open_pools().is_empty() {
            self.pool()?;
        }
        let mode = match req.mode.as_deref().unwrap_or("linked") {
            "linked" => CloneMode::Linked,
            "full" => CloneMode::Full,
            other => {
                return Err(MgrError::InvalidValue {
                    what: "clone mode",
                    value: format!("{other:?}"),
                    reason: "use linked or full".into(),
                })
            }
        };
        check_name(ObjectKind::Lun, &req.name)?;
        if st.luns.contains_key(&req.name) {
            return Err(MgrError::AlreadyExists {
                kind: ObjectKind::Lun,
                name: req.name.clone(),
            });
        }
        let (src_lun, src_snap) = match req.source.split_once('@') {
            Some((l, s)) => (l, Some(s)),
            None => (req.source.as_str(), None),
        };
        let src = lun_rec(&st, src_lun)?.clone();
        let pool_name = self.pool_name_of(&src);
        if let Some(want) = &req.pool {
            self.known_pool(want)?;
            if *want != pool_name {
                return Err(MgrError::CrossPool {
                    what: "clone create",
                    lun: src_lun.to_string(),
                    pool: pool_name,
                    other: want.clone(),
                });
            }
        }
        let pool = self.pool_named(&pool_name)?;
        online(&src)?;
        if let Some(s) = src_snap {
            self.snapshot_exists(&st, src_lun, s)?;
        }
        let guarantee = req.guarantee.as_deref().map(parse_guarantee).transpose()?;
        let map_to = match &req.target {
            Some(t) => Some((t.clone(), free_lun_id(&st, t, req.lun_id)?)),
            None if req.lun_id.is_some() => {
                return Err(MgrError::NeedsArgument {
                    given: "--lun-id",
                    needs: "--target",
                    why: "",
                })
            }
            None if req.copy_acl => {
                return Err(MgrError::NeedsArgument {
                    given: "--copy-acl",
                    needs: "--target",
                    why: ": ACLs belong to targets, so they are copied into the target the clone is mapped to",
                })
            }
            None => None,
        };

        st.next_job += 1;
        let job = CloneJobRecord {
            id: format!("clone-{}", st.next_job),
            source: req.source.clone(),
            destination: req.name.clone(),
            mode,
            state: JobState::Creating,
            done: 0,
            total: 0,
            error: None,
            started_unix: now_unix(),
            finished_unix: None,
            map_to: map_to.clone(),
        };
        // A clone of a replica is a normal writable LUN (dev/test on the replica): the
        // replica's write protection is the relationship's, not its data's.
        let inherit_ro = src.read_only && super::replicas::protecting(&st, &src.name).is_none();
        // Intent first: a crash from here on is cleaned up at the next start.
        st.luns.insert(
            req.name.clone(),
            LunRecord {
                name: req.name.clone(),
                identity: uuid::Uuid::nil(),
                read_only: req.read_only.unwrap_or(inherit_ro),
                status: LunStatus::Creating,
                origin: Some(req.source.clone()),
                clone_mode: Some(mode),
                created_unix: now_unix(),
                pool: pool_name.clone(),
                geometry: None,
            },
        );
        st.clone_jobs.push(job.clone());
        self.save(&st)?;

        let created = pool.clone_volume(&req.source, &req.name, guarantee).await;
        let info = match created {
            Ok(i) => i,
            Err(e) => {
                let err = self.in_pool(&pool_name)(e);
                st.luns.remove(&req.name);
                finish_job(&mut st, &job.id, JobState::Failed, Some(err.to_string()));
                self.save(&st)?;
                crate::metrics::global().clone_job_finished("failed");
                return Err(err);
            }
        };
        if let Some(r) = st.luns.get_mut(&req.name) {
            r.identity = info.uuid;
        }
        if req.copy_acl {
            if let Some((t, _)) = &map_to {
                copy_acl(&mut st, src_lun, t);
            }
        }
        match mode {
            CloneMode::Linked => {
                self.complete_locked(&mut st, &job.id)?;
                crate::metrics::global().clone_job(
                    &job.id,
                    &job.source,
                    &job.destination,
                    1.0,
                    "completed",
                );
                crate::metrics::global().clone_job_finished("completed");
                let rec = st.clone_jobs.iter().find(|j| j.id == job.id).cloned();
                Ok(rec
                    .as_ref()
                    .map_or_else(|| CloneJobView::from(&job), CloneJobView::from))
            }
            CloneMode::Full => {
                self.spawn_split(&mut st, &job.id, &req.name, true)?;
                self.save(&st)?;
                Ok(self.job_view(&st, &job.id))
            }
        }
    }

    /// Marks the job's LUN online, maps it if asked and persists.
    fn complete_locked(&self, st: &mut State, job_id: &str) -> MgrResult<()> {
        let Some(job) = st.clone_jobs.iter().find(|j| j.id == job_id).cloned() else {
            return Ok(());
        };
        if let Some(r) = st.luns.get_mut(&job.destination) {
            r.status = LunStatus::Online;
        }
        finish_job(st, job_id, JobState::Completed, None);
        if let Some((t, id)) = &job.map_to {
            if let Err(e) = self.map_locked(st, &job.destination, t, *id) {
                // The target or LUN number went away meanwhile: keep the clone, unmapped.
                tracing::warn!(job = job_id, "clone complete but not mapped: {e}");
                if let Some(j) = st.clone_jobs.iter_mut().find(|j| j.id == job_id) {
                    j.error = Some(format!("completed, but not mapped: {e}"));
                }
            }
        }
        self.save(st)
    }

    /// Starts the background split of `lun` for job `job_id`. `hidden`: the LUN is a full
    /// clone being created (removed on failure/cancel); otherwise an online linked clone
    /// being made independent (left linked on failure/cancel).
    fn spawn_split(
        self: &Arc<Self>,
        st: &mut State,
        job_id: &str,
        lun: &str,
        hidden: bool,
    ) -> MgrResult<()> {
        let (_, pool) = self.lun_pool(st, lun)?;
        let split = match pool.start_split(lun) {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                if hidden {
                    st.luns.remove(lun);
                    let lun = lun.to_string();
                    tokio::spawn(async move {
                        let _ = pool.delete_volume(&lun).await;
                    });
                }
                finish_job(st, job_id, JobState::Failed, Some(msg));
                self.save(st)?;
                return Err(e.into());
            }
        };
        let (cancel, mut cancel_rx) = tokio::sync::watch::channel(false);
        let (finished, _) = tokio::sync::watch::channel(false);
        let ctl = Arc::new(JobCtl {
            cancel,
            finished,
            done: Default::default(),
            total: Default::default(),
        });
        self.jobs.lock().insert(job_id.to_string(), ctl.clone());
        let (src, dst) = st
            .clone_jobs
            .iter()
            .find(|j| j.id == job_id)
            .map(|j| (j.source.clone(), j.destination.clone()))
            .unwrap_or_default();
        crate::metrics::global().clone_job(job_id, &src, &dst, 0.0, "creating");
        let mgr = self.clone();
        let job_id = job_id.to_string();
        let lun = lun.to_string();
        tokio::spawn(async move {
            let mut cancelled = false;
            loop {
                let (d, t) = split.progress();
                ctl.done.store(d, Ordering::Relaxed);
                ctl.total.store(t, Ordering::Relaxed);
                let frac = if t == 0 { 0.0 } else { d as f64 / t as f64 };
                crate::metrics::global().clone_job(&job_id, &src, &dst, frac, "creating");
                // A split that failed (e.g. the pool filled up) ends before reaching 100 %:
                // stop polling and report its error instead of staying "creating".
                if d >= t || split.is_finished() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    r = cancel_rx.changed() => {
                        if r.is_err() || *cancel_rx.borrow() {
                            split.cancel();
                            cancelled = true;
                            break;
                        }
                    }
                }
            }
            let result = split.wait().await;
            mgr.split_finished(&job_id, &lun, hidden, cancelled, result)
                .await;
            ctl.finished.send_replace(true);
            mgr.jobs.lock().remove(&job_id);
        });
        Ok(())
    }

    async fn split_finished(
        &self,
        job_id: &str,
        lun: &str,
        hidden: bool,
        cancelled: bool,
        result: storage_core::Result<()>,
    ) {
        let mut st = self.lock().await;
        let (src, dst) = st
            .clone_jobs
            .iter()
            .find(|j| j.id == job_id)
            .map(|j| (j.source.clone(), j.destination.clone()))
            .unwrap_or_default();
        let outcome = match result {
            Ok(()) if !cancelled => {
                if let Some(j) = st.clone_jobs.iter_mut().find(|j| j.id == job_id) {
                    j.done = j.total.max(j.done);
                }
                if let Some(r) = st.luns.get_mut(lun) {
                    r.clone_mode = Some(CloneMode::Full);
                }
                if hidden {
                    if let Err(e) = self.complete_locked(&mut st, job_id) {
                        tracing::error!(job = job_id, "cannot record completion: {e}");
                    }
                } else {
                    finish_job(&mut st, job_id, JobState::Completed, None);
                }
                "completed"
            }
            Ok(()) | Err(StorageError::Cancelled) => {
                if hidden {
                    if let Ok((_, pool)) = self.lun_pool(&st, lun) {
                        let _ = pool.delete_volume(lun).await;
                    }
                    st.luns.remove(lun);
                }
                finish_job(&mut st, job_id, JobState::Cancelled, None);
                "cancelled"
            }
            Err(e) => {
                tracing::error!(job = job_id, "clone copy failed: {e}");
                if hidden {
                    if let Ok((_, pool)) = self.lun_pool(&st, lun) {
                        let _ = pool.delete_volume(lun).await;
                    }
                    st.luns.remove(lun);
                }
                finish_job(&mut st, job_id, JobState::Failed, Some(e.to_string()));
                "failed"
            }
        };
        if let Err(e) = self.save(&st) {
            tracing::error!(job = job_id, "cannot persist job end: {e}");
        }
        let m = crate::metrics::global();
        m.clone_job(
            job_id,
            &src,
            &dst,
            if outcome == "completed" { 1.0 } else { 0.0 },
            outcome,
        );
        m.clone_job_finished(outcome);
        tracing::info!(job = job_id, lun, outcome, "clone job finished");
    }

    fn job_view(&self, st: &State, id: &str) -> CloneJobView {
        let mut v = st
            .clone_jobs
            .iter()
            .find(|j| j.id == id)
            .map(CloneJobView::from)
            .unwrap_or_else(|| CloneJobView {
                id: id.into(),
                source: String::new(),
                destination: String::new(),
                mode: String::new(),
                progress_pct: 0.0,
                state: "unknown".into(),
                error: None,
                started_unix: 0,
                finished_unix: None,
            });
        if let Some(ctl) = self.jobs.lock().get(id) {
            let (d, t) = (
                ctl.done.load(Ordering::Relaxed),
                ctl.total.load(Ordering::Relaxed),
            );
            if t > 0 {
                v.progress_pct = (d as f64 * 100.0 / t as f64).min(100.0);
            }
        }
        v
    }

    /// Clone jobs, oldest first. `purge` first forgets the finished ones.
    pub async fn clone_list(&self, purge: bool) -> MgrResult<Vec<CloneJobView>> {
        let mut st = self.lock().await;
        if purge {
            let m = crate::metrics::global();
            for j in st.clone_jobs.iter().filter(|j| j.state.is_final()) {
                m.remove_clone_job(&j.id, &j.source, &j.destination);
            }
            st.clone_jobs.retain(|j| !j.state.is_final());
            self.save(&st)?;
        }
        Ok(st
            .clone_jobs
            .iter()
            .map(|j| self.job_view(&st, &j.id))
            .collect())
    }

    /// Cancels the running job of clone `name` and waits until it has stopped (a full clone
    /// being created is then gone).
    pub async fn clone_cancel(&self, name: &str) -> MgrResult<CloneJobView> {
        let id = {
            let st = self.lock().await;
            st.clone_jobs
                .iter()
                .rev()
                .find(|j| j.destination == name || j.id == name)
                .filter(|j| !j.state.is_final())
                .map(|j| j.id.clone())
                .ok_or_else(|| MgrError::NoRunningJob {
                    name: name.to_string(),
                })?
        };
        let ctl = self.jobs.lock().get(&id).cloned();
        if let Some(ctl) = ctl {
            let mut fin = ctl.finished.subscribe();
            ctl.cancel.send_replace(true);
            while !*fin.borrow_and_update() {
                if fin.changed().await.is_err() {
                    break;
                }
            }
        }
        let st = self.lock().await;
        Ok(self.job_view(&st, &id))
    }

    /// Makes an online linked clone independent of its source (background copy; the LUN
    /// stays online). Returns the job.
    pub async fn clone_split(self: &Arc<Self>, name: &str) -> MgrResult<CloneJobView> {
        let mut st = self.lock().await;
        self.lun_pool(&st, name)?;
        let rec = lun_rec(&st, name)?.clone();
        online(&rec)?;
        if rec.origin.is_none() || rec.clone_mode == Some(CloneMode::Full) {
            return Err(MgrError::NotAClone {
                name: name.to_string(),
                linked: true,
            });
        }
        if let Some(j) = self.job_touching(&st, name) {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: name.to_string(),
                by: UsedBy::CloneJob(j),
                hint: "wait for it to end or cancel it",
            });
        }
        st.next_job += 1;
        let id = format!("clone-{}", st.next_job);
        st.clone_jobs.push(CloneJobRecord {
            id: id.clone(),
            source: rec.origin.clone().unwrap_or_default(),
            destination: name.to_string(),
            mode: CloneMode::Full,
            state: JobState::Creating,
            done: 0,
            total: 0,
            error: None,
            started_unix: now_unix(),
            finished_unix: None,
            map_to: None,
        });
        self.save(&st)?;
        self.spawn_split(&mut st, &id, name, false)?;
        Ok(self.job_view(&st, &id))
    }

    /// Re-bases clone `name` on a new point in time of `source` (default: its origin LUN's
    /// current contents), keeping its name, LUN numbers, ACLs and SCSI identity. The old
    /// contents (and the clone's snapshots) are discarded. Refused while initiators are
    /// logged in to a target exporting it unless `force`.
    pub async fn clone_refresh(
        &self,
        name: &str,
        source: Option<&str>,
        force: bool,
    ) -> MgrResult<LunView> {
        let mut st = self.lock().await;
        let rec = lun_rec(&st, name)?.clone();
        online(&rec)?;
        let origin = rec.origin.clone().ok_or_else(|| MgrError::NotAClone {
            name: name.to_string(),
            linked: false,
        })?;
        let source = source
            .map(str::to_string)
            .unwrap_or_else(|| origin.split('@').next().unwrap_or_default().to_string());
        let src_lun = source.split('@').next().unwrap_or_default().to_string();
        if src_lun == name {
            return Err(MgrError::InvalidValue {
                what: "source",
                value: format!("{source:?}"),
                reason: "a clone cannot be refreshed from itself".into(),
            });
        }
        let src_rec = lun_rec(&st, &src_lun)?;
        online(src_rec)?;
        let (pool_name, pool) = self.lun_pool(&st, name)?;
        let src_pool = self.pool_name_of(src_rec);
        if src_pool != pool_name {
            return Err(MgrError::CrossPool {
                what: "clone refresh",
                lun: src_lun.clone(),
                pool: src_pool,
                other: pool_name,
            });
        }
        if let Some((l, s)) = source.split_once('@') {
            self.snapshot_exists(&st, l, s)?;
        }
        if let Some(j) = self.job_touching(&st, name) {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: name.to_string(),
                by: UsedBy::CloneJob(j),
                hint: "wait for it to end or cancel it",
            });
        }
        let busy = self.busy_targets(&st, name);
        if !busy.is_empty() && !force {
            return Err(MgrError::InUse {
                kind: ObjectKind::Lun,
                name: name.to_string(),
                by: UsedBy::Sessions(busy),
                hint: "pass --force to swap its contents under them",
            });
        }
        let guarantee = pool.volume_info(name)?.guarantee;
        st.next_job += 1;
        let tmp = format!("{name}.refresh-{}", st.next_job);
        pool.clone_volume(&source, &tmp, Some(guarantee))
            .await
            .map_err(self.in_pool(&pool_name))?;
        let mappings = mappings_of(&st, name);
        for m in &mappings {
            if let Some(t) = self.scsi_target(&m.target) {
                let _ = t.remove_lun(m.lun_id);
            }
        }
        if let Err(e) = pool.delete_volume(name).await {
            let _ = pool.delete_volume(&tmp).await;
            self.reload_mappings(&st);
            return Err(e.into());
        }
        pool.rename_volume(&tmp, name).await?;
        if let Some(r) = st.luns.get_mut(name) {
            r.origin = Some(source.clone());
            r.clone_mode = Some(CloneMode::Linked);
        }
        for m in &mappings {
            if let Some(t) = self.scsi_target(&m.target) {
                attach_with_identity(&pool, &st, &t, m.lun_id, name);
                self.tag_alua(&st, &t, m.lun_id, name);
            }
        }
        self.save(&st)?;
        tracing::info!(lun = name, source, "clone refreshed");
        Ok(self.lun_view_pub(&st, name))
    }

    fn lun_view_pub(&self, st: &State, name: &str) -> LunView {
        match st.luns.get(name) {
            Some(r) => self.lun_view_of(st, r),
            None => unreachable_view(name),
        }
    }
}

fn unreachable_view(name: &str) -> LunView {
    LunView {
        name: name.into(),
        state: "missing".into(),
        size_bytes: 0,
        block_size: 0,
        guarantee: "none".into(),
        mapped_bytes: 0,
        unique_bytes: 0,
        shared_bytes: 0,
        reserved_bytes: 0,
        naa: String::new(),
        serial: String::new(),
        read_only: false,
        origin: None,
        clone_mode: None,
        mappings: Vec::new(),
        snapshots: 0,
        created_unix: 0,
        pool: String::new(),
    }
}

/// Attaches a refreshed clone. The device server derives the NAA id from the volume; the
/// LUN's identity is kept in the state (see docs/admin-api.md, "clone refresh").
fn attach_with_identity(pool: &Pool, st: &State, t: &crate::scsi::ScsiTarget, id: u64, name: &str) {
    super::attach(pool, st, t, id, name);
}

fn finish_job(st: &mut State, id: &str, state: JobState, error: Option<String>) {
    if let Some(j) = st.clone_jobs.iter_mut().find(|j| j.id == id) {
        j.state = state;
        j.error = error;
        j.finished_unix = Some(now_unix());
        if state == JobState::Completed {
            j.done = j.total;
        }
    }
}

/// `--copy-acl`: the clone's target additionally allows every initiator allowed on any
/// target exporting the source (and `allow_any` if one of them allows any). CHAP is not
/// copied: credentials are the target's own.
fn copy_acl(st: &mut State, src_lun: &str, target: &str) {
    let mut add = Vec::new();
    let mut any = false;
    // Initiator names only mean something on the fabric they were written for.
    let Some(fabric) = st.targets.get(target).map(|t| t.fabric) else {
        return;
    };
    for t in st.targets.values() {
        if t.fabric == fabric && t.luns.values().any(|n| n == src_lun) {
            any |= t.allow_any;
            add.extend(t.initiators.iter().cloned());
        }
    }
    if let Some(t) = st.targets.get_mut(target) {
        t.allow_any |= any;
        for i in add {
            if !t.initiators.iter().any(|x| x.eq_ignore_ascii_case(&i)) {
                t.initiators.push(i);
            }
        }
    }
}

/// At start-up: jobs a crash or shutdown interrupted are reported failed; full clones still
/// being created are removed (never presented), splits of online clones just stop.
pub(crate) async fn recover_interrupted(st: &mut State, pool_name: &str, pool: &Pool) {
    // The jobs whose clone is in this pool (or has no record left at all).
    let interrupted: Vec<CloneJobRecord> = st
        .clone_jobs
        .iter()
        .filter(|j| !j.state.is_final())
        .filter(|j| {
            st.luns
                .get(&j.destination)
                .is_none_or(|r| r.pool == pool_name)
        })
        .cloned()
        .collect();
    for j in interrupted {
        let hidden = st
            .luns
            .get(&j.destination)
            .is_some_and(|r| r.status == LunStatus::Creating);
        if hidden {
            match pool.delete_volume(&j.destination).await {
                Ok(()) | Err(StorageError::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(lun = %j.destination, "cannot remove the interrupted clone: {e}")
                }
            }
            st.luns.remove(&j.destination);
        }
        tracing::warn!(job = %j.id, lun = %j.destination, "clone job interrupted by a restart: marked failed");
        finish_job(
            st,
            &j.id,
            JobState::Failed,
            Some("interrupted: lunard stopped during the copy".into()),
        );
    }
    // A LUN stuck in `creating` without a job (should not happen): never present it.
    let stuck: Vec<String> = st
        .luns
        .values()
        .filter(|r| r.status == LunStatus::Creating && r.pool == pool_name)
        .map(|r| r.name.clone())
        .collect();
    for name in stuck {
        let _ = pool.delete_volume(&name).await;
        st.luns.remove(&name);
    }
}
