//! The lanes: one call at a time per chat, in order, interactive ones first.

use super::*;
use crate::outbound::call::Request;
use futures::future::BoxFuture;

struct Nothing;
impl crate::outbound::broker::Delivery for Nothing {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    fn release(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

fn job(seq: u64, chat: Option<i64>) -> Job {
    let request = Request {
        method: Some("sendMessage".into()),
        request_id: None,
        reply_to: None,
        broker_id: seq.to_string(),
        body: bytes::Bytes::new(),
        published: None,
        options: Default::default(),
    };
    Job {
        seq,
        taken: Taken {
            request,
            delivery: Box::new(Nothing),
        },
        call: Call {
            method: "sendMessage".into(),
            chat: chat.map(ChatKey::Id),
            message: true,
            inline_message: None,
            business_connection: None,
            weight: 1,
            paid: false,
            interactive: false,
            repeatable: false,
            deadline: None,
        },
        ce_id: format!("1:{seq}"),
        key: format!("1:{seq}"),
        fingerprint: 0,
        taken_at: Instant::now(),
        attempts: 0,
        failures: 0,
        reached: false,
        journaled: false,
        deadline: None,
        followers: Vec::new(),
    }
}

#[test]
fn a_chat_runs_one_call_at_a_time_in_order() {
    let mut lanes = Lanes::default();
    let now = Instant::now();
    let a = lanes.push(job(1, Some(5)));
    assert_eq!(lanes.push(job(2, Some(5))), a);
    let b = lanes.push(job(3, Some(6)));
    for key in [&a, &b] {
        assert_eq!(lanes.needs_schedule(key), Some(None));
        lanes.schedule(key.clone(), now, now);
    }
    let (first, job) = lanes.start().unwrap();
    assert_eq!((first.clone(), job.seq), (a.clone(), 1));
    assert_eq!(lanes.start().unwrap().1.seq, 3);
    assert!(lanes.start().is_none(), "chat 5 is busy");
    assert_eq!(lanes.needs_schedule(&a), None);
    assert_eq!(lanes.finish(&a).unwrap().seq, 1);
    lanes.schedule(a.clone(), now, now);
    assert_eq!(lanes.start().unwrap().1.seq, 2);
}

#[test]
fn inline_messages_and_business_chats_have_lanes_of_their_own() {
    let mut lanes = Lanes::default();
    let mut inline = job(1, None);
    inline.call.inline_message = Some("m1".into());
    let a = lanes.push(inline);
    let mut again = job(2, None);
    again.call.inline_message = Some("m1".into());
    assert_eq!(
        lanes.push(again),
        a,
        "edits of one inline message, in order"
    );
    let mut business = job(3, Some(5));
    business.call.business_connection = Some("b".into());
    let b = lanes.push(business);
    assert_ne!(
        b,
        lanes.push(job(4, Some(5))),
        "the bot's own chat 5 is another"
    );
    assert_ne!(lanes.push(job(5, None)), lanes.push(job(6, None)));
}

#[test]
fn an_interactive_call_goes_before_every_bulk_one() {
    let mut lanes = Lanes::default();
    let now = Instant::now();
    for seq in 1..=3 {
        let key = lanes.push(job(seq, Some(seq as i64)));
        lanes.schedule(key, now, now);
    }
    let mut answer = job(4, None);
    answer.call.interactive = true;
    let key = lanes.push(answer);
    lanes.schedule(key, now, now);
    let order: Vec<u64> = std::iter::from_fn(|| lanes.start().map(|(_, j)| j.seq)).collect();
    assert_eq!(order, [4, 1, 2, 3]);
}

#[test]
fn a_stale_timer_never_schedules_a_lane_twice() {
    let mut lanes = Lanes::default();
    let now = Instant::now();
    let later = now + std::time::Duration::from_secs(1);
    let a = lanes.push(job(1, Some(5)));
    lanes.schedule(a.clone(), later, now);
    // The lane is rescheduled for now (say its pause was lifted): the timer is stale.
    assert!(lanes.due(now).is_empty());
    lanes.finish(&a);
    let a = lanes.push(job(2, Some(5)));
    lanes.schedule(a.clone(), now, now);
    assert!(lanes.due(later).is_empty(), "the old lane's timer");
    assert!(lanes.start().is_some());
    assert!(lanes.start().is_none());
}

#[test]
fn unstarted_jobs_are_given_back_in_taken_order() {
    let mut lanes = Lanes::default();
    let now = Instant::now();
    for (seq, chat) in [(1, 5), (2, 6), (3, 5), (4, 6), (5, 7)] {
        let key = lanes.push(job(seq, Some(chat)));
        if lanes.needs_schedule(&key).is_some() {
            lanes.schedule(key, now, now);
        }
    }
    assert_eq!(lanes.start().unwrap().1.seq, 1);
    let back: Vec<u64> = lanes.drain_unstarted().iter().map(|j| j.seq).collect();
    assert_eq!(back, vec![2, 3, 4, 5]);
    assert!(lanes.start().is_none());
}
