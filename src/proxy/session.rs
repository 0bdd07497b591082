//! A session's binding (`X-Session-Id`) as a request keeps it. It is
//! claimed before the first byte of an answer reaches the client, so a
//! client that sends its next turn to another replica the moment it has the
//! answer finds the binding there (what one replica promised, every replica
//! knows: docs/security.md, "Invariants"). Only a request that makes or
//! moves a binding waits for the store; one that stays on its bound
//! upstream touches the binding after the answer, in the background.

use apiproxy_store::{BoundUpstream, Deferred, SessionBinding, Store};

use super::ctx::RequestCtx;

/// The upstream an answer comes from, as a binding names it.
#[derive(Debug, Clone, Copy)]
pub struct Serving<'a> {
    pub provider_id: &'a str,
    pub model_id: &'a str,
    /// Index of the provider key used (`None`: a keyless provider).
    pub api_key_index: Option<usize>,
}

/// The binding a request of `ctx` makes to `serving`.
fn binding_for(ctx: &RequestCtx, sid: &str, serving: Serving<'_>) -> SessionBinding {
    SessionBinding::new(
        sid,
        ctx.state_owner(),
        BoundUpstream {
            logical_model: &ctx.requested_model,
            provider_id: serving.provider_id,
            model_id: serving.model_id,
            key_index: serving.api_key_index.unwrap_or(0),
        },
    )
}

/// Whether the binding must be claimed before the answer: the request
/// knows of no binding of its session, or the one it knows names another
/// upstream (a failover moved the session). Staying on the bound upstream,
/// with another of its keys too, needs no wait.
pub fn must_claim(known: Option<&SessionBinding>, wanted: &SessionBinding) -> bool {
    known.is_none_or(|k| {
        k.logical_model != wanted.logical_model
            || k.provider_id != wanted.provider_id
            || k.model_id != wanted.model_id
    })
}

/// Before the first byte of an answer from `serving`: claims the session's
/// binding when [`must_claim`] says so, set only if the session is unbound
/// or still bound as this request saw it (two replicas cannot both win),
/// and notes what is bound afterwards. One awaited store call, only then.
pub async fn claim_before_answer(store: &dyn Store, ctx: &mut RequestCtx, serving: Serving<'_>) {
    let Some(sid) = ctx.session_id.as_deref() else {
        return;
    };
    let wanted = binding_for(ctx, sid, serving);
    if !must_claim(ctx.binding.as_ref(), &wanted) {
        return;
    }
    let now = store.claim_session(wanted, ctx.binding.as_ref()).await;
    let owner = ctx.state_owner();
    ctx.binding = now.filter(|b| b.belongs_to(owner));
    ctx.binding_claimed = true;
}

/// After an answer from `serving`: a request that claimed nothing (it
/// stayed on its bound upstream) counts its message and restarts the
/// binding's TTL, in the background, unless another replica moved the
/// binding meanwhile.
pub fn touch_after_answer(store: &dyn Store, ctx: &RequestCtx, serving: Serving<'_>) {
    let Some(sid) = ctx.session_id.as_deref() else {
        return;
    };
    if ctx.binding_claimed {
        return;
    }
    store.defer(Deferred::Claim {
        binding: binding_for(ctx, sid, serving),
        expected: ctx.binding.clone().map(Box::new),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(provider: &str, model: &str, api_key_index: usize) -> SessionBinding {
        SessionBinding::new(
            "s",
            Some("alice"),
            BoundUpstream {
                logical_model: "fast",
                provider_id: provider,
                model_id: model,
                key_index: api_key_index,
            },
        )
    }

    #[test]
    fn only_a_new_or_moved_binding_is_waited_for() {
        let a = binding("a", "m", 0);
        assert!(must_claim(None, &a), "unbound: claimed before the answer");
        assert!(!must_claim(Some(&a), &a), "staying: touched afterwards");
        assert!(
            !must_claim(Some(&a), &binding("a", "m", 1)),
            "another key of the bound upstream: touched afterwards"
        );
        assert!(
            must_claim(Some(&a), &binding("b", "m", 0)),
            "moved provider"
        );
        assert!(must_claim(Some(&a), &binding("a", "n", 0)), "moved model");
    }
}
