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
