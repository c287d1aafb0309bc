use super::*;

#[tokio::test(start_paused = true)]
async fn drain_completes_when_watches_drop() {
    let (trigger, watch) = channel();
    let mut task_watch = watch.clone();
    drop(watch);
    let task = tokio::spawn(async move {
        task_watch.stopped().await;
        drop(task_watch);
    });
    let result = trigger
        .drain(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(result, Drained::Gracefully);
    task.await.expect("task");
}

#[tokio::test(start_paused = true)]
async fn stragglers_are_closed_at_the_deadline() {
    let (trigger, mut watch) = channel();
    let task = tokio::spawn(async move {
        // Ignores stop, like a long-lived connection; leaves only when closed.
        watch.closed().await;
        drop(watch);
    });
    let result = trigger
        .drain(Duration::from_secs(5), Duration::from_secs(1))
        .await;
    assert_eq!(result, Drained::AtDeadline);
    task.await.expect("task");
}

#[tokio::test(start_paused = true)]
async fn a_scope_drains_on_its_own_and_the_gateway_waits_for_it() {
    let (gateway, root) = channel();
    let (scope, scope_watch) = channel();
    let mut conn = root.scoped(&scope_watch);
    drop((root, scope_watch));
    // The listener's drain stops and then closes its connection at its own deadline.
    let listener = tokio::spawn(scope.drain(Duration::from_secs(2), Duration::from_secs(1)));
    conn.stopped().await;
    assert!(conn.is_stopping());
    let task = tokio::spawn(async move {
        conn.closed().await;
        // Still held: the gateway's drain must wait for it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(conn);
    });
    assert_eq!(listener.await.expect("listener drain"), Drained::AtDeadline);
    let started = tokio::time::Instant::now();
    let result = gateway
        .drain(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(result, Drained::Gracefully);
    assert!(started.elapsed() < Duration::from_secs(10));
    task.await.expect("task");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_scope_never_stops_its_watches_but_the_gateway_drain_does() {
    let (gateway, root) = channel();
    let (scope, scope_watch) = channel();
    let mut conn = root.scoped(&scope_watch);
    drop((scope, scope_watch, root));
    let stopped = tokio::time::timeout(Duration::from_secs(5), conn.stopped()).await;
    assert!(stopped.is_err(), "a dropped scope is not a drain");
    let task = tokio::spawn(async move { conn.stopped().await });
    let result = gateway
        .drain(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(result, Drained::Gracefully);
    task.await.expect("stopped by the gateway drain");
}

#[tokio::test(start_paused = true)]
async fn a_spawner_does_not_hold_the_drain_and_stops_handing_out_watches() {
    let (gateway, root) = channel();
    drop(root);
    let spawner = gateway.spawner();
    let mut late = spawner.watch().expect("a watch before draining");
    let task = tokio::spawn(async move { late.stopped().await });
    let result = gateway
        .drain(Duration::from_secs(10), Duration::from_secs(1))
        .await;
    assert_eq!(result, Drained::Gracefully);
    task.await.expect("late task stopped");
    assert!(spawner.watch().is_none(), "no new watches once draining");
}
