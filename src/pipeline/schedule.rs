//! Schedule: a pipeline's selected tables in dependency order, at most `--jobs` at once; a
//! table whose dependency did not end well is skipped, and so is every table not yet started
//! once one fails under `--fail-fast`.

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;

use super::conclude::commit_together;
use super::report::{failed_run, not_started, record_run};
use super::{RunOptions, TableRun, TableStatus, run_table};
use crate::error::Error;
use crate::spec::{Plan, TablePlan};
use crate::store::Store;

/// Where a selected table is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Waiting,
    Running,
    /// Ended; `true` when it committed (or would have, in a dry run).
    Ended(bool),
}

/// Run the selected tables (in dependency order) with at most `--jobs` at once: a table starts
/// once every table it depends on has ended well; a table whose dependency did not is skipped,
/// and so is every table not yet started once one fails under `--fail-fast`. `on_table` sees
/// each outcome in the pipeline's order, so logs read the same whatever the timing.
pub(super) async fn schedule(
    plan: &Plan,
    selected: &[&TablePlan],
    store: &Store,
    options: &RunOptions,
    on_table: &mut impl FnMut(&TableRun),
) -> Vec<TableRun> {
    let jobs = match options.jobs {
        0 => crate::parallel::cores(),
        n => n,
    };
    let mut options = options.clone();
    if plan.atomic && !options.dry_run {
        options.atomic_run = Some(uuid::Uuid::new_v4().simple().to_string());
    }
    let shared = Arc::new((plan.clone(), store.clone(), options));
    let options = &shared.2;
    let atomic = &options.atomic_run;
    let mut stages = vec![Stage::Waiting; selected.len()];
    let mut outcomes: Vec<Option<TableRun>> = selected.iter().map(|_| None).collect();
    let mut reported = 0;
    let mut first_failure: Option<String> = None;
    let mut running = futures::stream::FuturesUnordered::new();
    // Each table's selected dependencies, by index (those not selected have a baseline).
    let dependencies: Vec<Vec<(usize, &String)>> = selected
        .iter()
        .map(|t| {
            t.depends_on
                .iter()
                .filter_map(|d| selected.iter().position(|s| &s.name == d).map(|j| (j, d)))
                .collect()
        })
        .collect();
    loop {
        for i in 0..selected.len() {
            if stages[i] != Stage::Waiting {
                continue;
            }
            let table = selected[i];
            let deps = &dependencies[i];
            let blocked = deps
                .iter()
                .find(|(j, _)| stages[*j] == Stage::Ended(false))
                .map(|(j, d)| match outcomes[*j].as_ref().map(|o| o.status) {
                    Some(TableStatus::Skipped) => format!("{d} was skipped"),
                    Some(TableStatus::Refused) => format!("{d} was refused"),
                    Some(TableStatus::Conflict) => format!("{d} lost a commit race"),
                    _ => format!("{d} failed"),
                })
                .or_else(|| {
                    options
                        .fail_fast
                        .then(|| {
                            first_failure
                                .as_ref()
                                .map(|f| format!("--fail-fast: {f} failed"))
                        })
                        .flatten()
                });
            if let Some(reason) = blocked {
                stages[i] = Stage::Ended(false);
                outcomes[i] = Some(skip(plan, table, store, options, reason).await);
                continue;
            }
            let ready = deps.iter().all(|(j, _)| stages[*j] == Stage::Ended(true));
            if ready && running.len() < jobs {
                stages[i] = Stage::Running;
                let shared = Arc::clone(&shared);
                let name = table.name.clone();
                running.push(async move {
                    let task = tokio::spawn(async move {
                        let (plan, store, options) = &*shared;
                        let table = plan.table(&name).expect("a selected table");
                        run_table(plan, table, store, options).await
                    });
                    (i, task.await)
                });
            }
        }
        // An atomic run's outcomes are known only once the pipeline commit decided.
        while atomic.is_none()
            && let Some(Some(outcome)) = outcomes.get(reported)
        {
            on_table(outcome);
            reported += 1;
        }
        let Some((i, joined)) = running.next().await else {
            break;
        };
        let outcome = joined.unwrap_or_else(|e| {
            failed_run(
                &selected[i].name,
                Error::Internal {
                    table: selected[i].name.clone(),
                    detail: e.to_string(),
                },
            )
        });
        let ok = outcome.error.is_none();
        if !ok && first_failure.is_none() {
            first_failure = Some(selected[i].name.clone());
        }
        stages[i] = Stage::Ended(ok);
        outcomes[i] = Some(outcome);
    }
    let mut outcomes: Vec<TableRun> = outcomes.into_iter().flatten().collect();
    if let Some(id) = &atomic {
        commit_together(plan, store, id, &mut outcomes, !options.no_deliver).await;
        for outcome in &outcomes {
            on_table(outcome);
        }
    }
    outcomes
}

/// A table that did not start, recorded in `runs` as skipped.
async fn skip(
    plan: &Plan,
    table: &TablePlan,
    store: &Store,
    options: &RunOptions,
    reason: String,
) -> TableRun {
    let outcome = TableRun {
        status: TableStatus::Skipped,
        skipped_because: Some(reason),
        ..not_started(&table.name)
    };
    if !options.dry_run {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        record_run(plan, table, store, &outcome, Utc::now(), &run_id).await;
    }
    outcome
}
