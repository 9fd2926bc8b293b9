//! Waiting for a peer that cannot say yes yet: the one retry policy every program
//! that founds or joins a cluster uses.

use std::future::Future;
use std::time::Duration;

use concord_types::ApiError;
use tokio::time::Instant;

/// Pause between attempts while the peer cannot say yes yet.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Calls `attempt` until it succeeds, fails for good, or `deadline` passes. Retries
/// the answers that mean "not yet": no leader, busy, dropped, timed out, unreachable,
/// and a peer that is up but has not founded the group yet.
pub async fn retry_until<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    loop {
        match attempt().await {
            Err(error)
                if (error.is_retryable()
                    || matches!(
                        error,
                        ApiError::Unavailable(_)
                            | ApiError::GroupNotFound { .. }
                            | ApiError::Timeout
                    ))
                    && Instant::now() + RETRY_PAUSE < deadline =>
            {
                tracing::debug!(%error, "not yet; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::DEFAULT_GROUP;

    // A founder that is up but has not bootstrapped yet answers GroupNotFound: a join
    // waits for it like for an unreachable peer, and gives up at the deadline; an
    // error that will not change (an invalid request) ends the wait at once.
    #[tokio::test]
    async fn joining_waits_for_a_founder_that_has_not_bootstrapped() {
        let attempts = Cell::new(0);
        let joined = retry_until(Instant::now() + Duration::from_secs(10), || {
            attempts.set(attempts.get() + 1);
            let answer = match attempts.get() {
                1 => Err(ApiError::Unavailable("connection refused".into())),
                2 | 3 => Err(ApiError::GroupNotFound {
                    group: DEFAULT_GROUP,
                }),
                _ => Ok("joined"),
            };
            async move { answer }
        })
        .await;
        assert_eq!(joined, Ok("joined"));
        assert_eq!(attempts.get(), 4);

        let attempts = Cell::new(0);
        let refused: Result<(), ApiError> =
            retry_until(Instant::now() + Duration::from_secs(10), || {
                attempts.set(attempts.get() + 1);
                async { Err(ApiError::InvalidRequest("no".into())) }
            })
            .await;
        assert!(matches!(refused, Err(ApiError::InvalidRequest(_))));
        assert_eq!(attempts.get(), 1);

        let gave_up: Result<(), ApiError> = retry_until(Instant::now(), || async {
            Err(ApiError::GroupNotFound {
                group: DEFAULT_GROUP,
            })
        })
        .await;
        assert!(matches!(gave_up, Err(ApiError::GroupNotFound { .. })));
    }
}
