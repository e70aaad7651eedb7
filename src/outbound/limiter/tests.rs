//! The limiter driven by a simulated clock: whatever order calls come in, no window
//! at "Telegram" (send time plus a delay) holds more than a limit allows.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The most events of `times` (sorted) inside any window of `width` (closed).
fn densest(times: &[Instant], width: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] > width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// A small deterministic sequence in [0, 1).
fn jitter(i: u64) -> f64 {
    ((i.wrapping_mul(2654435761) >> 7) % 1000) as f64 / 1000.0
}

/// Sends `n` calls as soon as the bot allows, each timer firing up to `late` after
/// its time (a call due already goes at once); returns the send times.
fn paced(limiter: &mut Limiter, t0: Instant, n: u64, late: Duration) -> Vec<Instant> {
    let mut now = t0;
    let mut sent = Vec::new();
    for i in 0..n {
        let ready = limiter.bot_ready_at(now);
        if ready > now {
            now = ready + late.mul_f64(jitter(i));
        }
        limiter.take(now);
        sent.push(now);
    }
    sent
}

#[test]
fn the_bot_keeps_96_percent_of_its_rate_and_no_second_sees_more() {
    for rate in [30.0, 1000.0] {
        let mut limiter = Limiter::new(Limits::new(rate, 1.0, 20.0));
        let t0 = Instant::now();
        let sent = paced(&mut limiter, t0, (rate * 60.0) as u64, CATCH_UP);
        let span = (*sent.last().unwrap() - t0).as_secs_f64();
        let achieved = sent.len() as f64 / span;
        assert!(achieved >= 0.96 * rate, "{rate}: {achieved}/s");
        // Telegram sees each call up to what the budget leaves after late timers
        // later than another.
        let on_the_way = JITTER_BUDGET - CATCH_UP;
        let mut seen: Vec<Instant> = sent
            .iter()
            .enumerate()
            .map(|(i, t)| *t + on_the_way.mul_f64(jitter(i as u64 + 7)))
            .collect();
        seen.sort();
        assert!(
            densest(&seen, Duration::from_secs(1)) <= rate as usize,
            "{rate}"
        );
    }
}

#[test]
fn late_timers_cost_rate_never_safety() {
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let t0 = Instant::now();
    let sent = paced(&mut limiter, t0, 600, 20 * MS);
    assert!(densest(&sent, Duration::from_secs(1)) <= 30);
    // An idle spell saves up no burst: the next two calls are a full interval apart.
    let later = *sent.last().unwrap() + secs(10.0);
    let first = limiter.bot_ready_at(later);
    limiter.take(first);
    let second = limiter.bot_ready_at(first);
    assert_eq!(first, later);
    assert!(second - first >= limiter.limits().bot_interval - CATCH_UP);
}

#[test]
fn a_chat_waits_a_gap_after_the_answer_to_its_last_message() {
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let user = ChatKey::Id(42);
    let t0 = Instant::now();
    assert_eq!(limiter.chat_ready_at(&user, true, t0), t0);
    limiter.answered(&user, t0 + 300 * MS);
    assert_eq!(limiter.chat_ready_at(&user, true, t0), t0 + secs(1.3));
    // Deleting, answering callbacks and chat actions do not wait for the gap.
    assert_eq!(limiter.chat_ready_at(&user, false, t0), t0);
    // Another chat does not wait at all.
    assert_eq!(limiter.chat_ready_at(&ChatKey::Id(43), true, t0), t0);
}

#[test]
fn a_group_gets_its_window_and_no_minute_sees_more() {
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let group = ChatKey::Id(-1001234);
    let mut now = Instant::now();
    let mut arrived = Vec::new();
    for i in 0..100 {
        now = limiter.chat_ready_at(&group, true, now);
        // The call reaches Telegram 0-200 ms after it is sent; the answer comes back
        // up to 200 ms later.
        let at_telegram = now + secs(0.2 * jitter(i));
        arrived.push(at_telegram);
        now = at_telegram + secs(0.2 * jitter(i + 1));
        limiter.answered(&group, now);
    }
    arrived.sort();
    assert!(densest(&arrived, Duration::from_secs(60)) <= 20);
    assert!(densest(&arrived, Duration::from_secs(1)) <= 1);
    // The first twenty go at one per second or so, not one per three seconds.
    assert!(arrived[19] - arrived[0] < secs(30.0));
    let channel = ChatKey::Username("news".into());
    assert!(channel.is_group() && ChatKey::Id(-5).is_group() && !ChatKey::Id(5).is_group());
}

#[test]
fn a_429_pauses_exactly_its_scope_for_exactly_its_wait() {
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let (a, b) = (ChatKey::Id(1), ChatKey::Id(2));
    let t0 = Instant::now();
    limiter.pause(&Scope::Chat(a.clone()), t0 + secs(7.0));
    assert_eq!(limiter.chat_ready_at(&a, true, t0), t0 + secs(7.0));
    assert_eq!(limiter.chat_ready_at(&a, false, t0), t0 + secs(7.0));
    assert_eq!(limiter.chat_ready_at(&b, true, t0), t0);
    assert_eq!(limiter.bot_ready_at(t0), t0);
    // A shorter pause never shortens a longer one.
    limiter.pause(&Scope::Chat(a.clone()), t0 + secs(2.0));
    assert_eq!(limiter.chat_ready_at(&a, true, t0), t0 + secs(7.0));

    limiter.pause(&Scope::Bot, t0 + secs(3.0));
    assert_eq!(limiter.bot_ready_at(t0), t0 + secs(3.0));
    assert_eq!(limiter.chat_ready_at(&b, true, t0), t0);
    assert_eq!(limiter.bot_ready_at(t0 + secs(3.0)), t0 + secs(3.0));
}

#[test]
fn idle_chats_are_forgotten_busy_ones_kept() {
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let t0 = Instant::now();
    limiter.answered(&ChatKey::Id(1), t0);
    limiter.answered(&ChatKey::Id(-1), t0);
    limiter.pause(&Scope::Chat(ChatKey::Id(2)), t0 + secs(100.0));
    limiter.forget_idle(t0 + secs(2.0));
    assert_eq!(
        limiter.chats_remembered(),
        2,
        "the group's window and the pause"
    );
    limiter.forget_idle(t0 + secs(61.0));
    assert_eq!(limiter.chats_remembered(), 1, "the pause");
    limiter.forget_idle(t0 + secs(100.0));
    assert_eq!(limiter.chats_remembered(), 0);
}

#[test]
fn a_baseline_counts_against_every_chat_not_yet_seen() {
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let t0 = Instant::now();
    limiter.baseline = Some((t0, 3));
    let group = ChatKey::Id(-7);
    let mut now = t0;
    let mut sent = 0;
    while limiter.chat_ready_at(&group, true, now) < t0 + secs(60.0) {
        now = limiter.chat_ready_at(&group, true, now);
        limiter.answered(&group, now);
        sent += 1;
    }
    assert_eq!(sent, 17, "20 per minute, 3 assumed already sent");
    assert_eq!(
        limiter.chat_ready_at(&ChatKey::Id(9), true, t0),
        t0 + secs(1.0)
    );
}

#[test]
fn an_album_costs_its_items_in_the_bot_and_in_its_group() {
    let t0 = Instant::now();
    let mut limiter = Limiter::new(Limits::new(30.0, 1.0, 20.0));
    let group = ChatKey::Id(-5);
    limiter.take_n(t0, 10, false);
    let next = limiter.bot_ready_at(t0);
    assert!(next >= t0 + limiter.limits().bot_interval * 10 - MS);
    limiter.answered_n(&group, t0, 10);
    limiter.answered_n(&group, t0 + secs(1.0), 10);
    // Twenty messages in the group's minute: the next waits for the first ten to leave it.
    let ready = limiter.chat_ready_at(&group, true, t0 + secs(2.0));
    assert!(ready >= t0 + secs(60.0), "{:?}", ready - t0);
}

#[test]
fn paid_broadcasts_spend_their_own_budget() {
    let t0 = Instant::now();
    let limits = Limits::new(30.0, 1.0, 20.0).with_paid(Some(1000.0));
    let mut limiter = Limiter::new(limits);
    for _ in 0..100 {
        limiter.take_n(t0, 1, true);
    }
    assert_eq!(limiter.bot_ready_at(t0), t0, "the free budget is untouched");
    let paid = limiter.paid_ready_at(t0);
    assert!(
        paid >= t0 + secs(0.1) && paid < t0 + secs(0.2),
        "{:?}",
        paid - t0
    );
}
