use super::*;

fn release(version: &str, n: u8) -> Release {
    Release {
        version: version.into(),
        root: RootHash([n; 32]),
        counter: u64::from(n),
    }
}

fn policy() -> Policy {
    Policy {
        grace: Duration::from_secs(5),
        passes: 2,
        interval: Duration::from_secs(1),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs the executor side: every command succeeds except checks of `bad`; returns the outcome.
fn run(service: &mut Service, mut now: Duration, bad: Option<RootHash>) -> (Outcome, Duration) {
    for _ in 0..1000 {
        service.check_invariants();
        while let Some(command) = service.poll_command() {
            match command {
                Command::Prepare(_) => service.handle_prepared(now, Ok(())),
                Command::Switch(_) => service.handle_switched(now, Ok(())),
                Command::Check(root) => {
                    let result = if Some(root) == bad {
                        Err("exit status 1".to_owned())
                    } else {
                        Ok(())
                    };
                    service.handle_check(now, result);
                }
            }
        }
        if let Some(outcome) = service.poll_outcome() {
            return (outcome, now);
        }
        now = service
            .poll_timeout()
            .expect("waiting on something")
            .max(now);
        service.handle_timeout(now);
    }
    panic!("no outcome after 1000 steps");
}

#[test]
fn a_healthy_release_becomes_current_and_the_old_one_previous() {
    let (v1, v2) = (release("1", 1), release("2", 2));
    let mut s = Service::new(policy());
    s.activate(v1.clone());
    assert_eq!(run(&mut s, secs(0), None).0, Outcome::Healthy(v1.clone()));
    s.activate(v2.clone());
    let (outcome, at) = run(&mut s, secs(100), None);
    assert_eq!(outcome, Outcome::Healthy(v2.clone()));
    assert_eq!(at, secs(101), "two passes one interval apart");
    assert_eq!(s.current(), Some(&v2));
    assert_eq!(s.previous(), Some(&v1));
    assert_eq!(s.state(), ServiceState::Healthy);
}

#[test]
fn a_failing_release_goes_back_to_the_previous_one_with_the_reason() {
    let (v1, v2) = (release("1", 1), release("2", 2));
    let mut s = Service::new(policy());
    s.activate(v1.clone());
    run(&mut s, secs(0), None);
    s.activate(v2.clone());
    let (outcome, at) = run(&mut s, secs(100), Some(v2.root));
    let Outcome::Failed {
        release,
        reason,
        back_on,
    } = outcome
    else {
        panic!("expected a failure");
    };
    assert_eq!(release, v2);
    assert_eq!(back_on, Some(v1.clone()));
    assert!(reason.contains("not healthy within 5s"), "{reason}");
    assert!(reason.contains("exit status 1"), "{reason}");
    assert!(at >= secs(105), "the grace period is waited out: {at:?}");
    assert_eq!(s.current(), Some(&v1));
    assert_eq!(s.state(), ServiceState::Failed);
    assert_eq!(s.failure(), Some(reason.as_str()), "status shows why");
    s.activate(v2.clone());
    assert_eq!(s.failure(), None, "until the next activation starts");
}

#[test]
fn a_crashing_service_fails_whatever_its_checks_say() {
    let (v1, v2) = (release("1", 1), release("2", 2));
    let mut s = Service::new(policy());
    s.activate(v1.clone());
    run(&mut s, secs(0), None);
    s.activate(v2);
    let Some(Command::Prepare(_)) = s.poll_command() else {
        panic!()
    };
    s.handle_prepared(secs(1), Ok(()));
    let Some(Command::Switch(_)) = s.poll_command() else {
        panic!()
    };
    s.handle_switched(secs(1), Ok(()));
    s.handle_crashed("exited 5 times in 10 s".into());
    let (outcome, _) = run(&mut s, secs(2), None);
    assert!(matches!(outcome, Outcome::Failed { reason, .. } if reason.contains("keeps exiting")));
    assert_eq!(s.current(), Some(&v1));
}

#[test]
fn a_staging_failure_switches_nothing() {
    let v1 = release("1", 1);
    let mut s = Service::new(policy());
    s.activate(v1.clone());
    run(&mut s, secs(0), None);
    s.activate(release("2", 2));
    let _ = s.poll_command();
    s.handle_prepared(secs(1), Err("no space left on device".into()));
    assert!(
        matches!(s.poll_outcome(), Some(Outcome::Failed { reason, .. }) if reason.contains("no space"))
    );
    assert_eq!(s.poll_command(), None, "nothing to switch back");
    assert_eq!(s.current(), Some(&v1));
    assert!(s.is_steady());
    assert!(s.failure().is_some_and(|r| r.contains("no space")));
}

#[test]
fn a_node_killed_mid_activation_switches_again_or_finishes_going_back() {
    let (v1, v2) = (release("1", 1), release("2", 2));
    let mut s = Service::new(policy());
    s.activate(v1.clone());
    run(&mut s, secs(0), None);
    s.activate(v2.clone());
    let _ = s.poll_command();
    s.handle_prepared(secs(1), Ok(()));
    let _ = s.poll_command();
    // Killed while switching: the saved state names the target.
    let saved = s.persisted();
    let mut restored = Service::restore(policy(), saved);
    assert_eq!(restored.poll_command(), Some(Command::Switch(v2.clone())));
    restored.handle_switched(secs(50), Ok(()));
    assert_eq!(
        run(&mut restored, secs(50), None).0,
        Outcome::Healthy(v2.clone())
    );
    assert_eq!(restored.current(), Some(&v2));

    // Killed while going back after a failure: it finishes going back.
    let mut s = Service::new(policy());
    s.activate(v1.clone());
    run(&mut s, secs(0), None);
    s.activate(v2.clone());
    let mut now = secs(10);
    loop {
        match s.poll_command() {
            Some(Command::Prepare(_)) => s.handle_prepared(now, Ok(())),
            Some(Command::Switch(r)) if r == v2 => s.handle_switched(now, Ok(())),
            Some(Command::Switch(_)) => break,
            Some(Command::Check(_)) => s.handle_check(now, Err("down".into())),
            None => {
                now = s.poll_timeout().unwrap();
                s.handle_timeout(now);
            }
        }
    }
    let saved = s.persisted();
    assert!(saved.failed_reason.is_some());
    let mut restored = Service::restore(policy(), saved);
    assert_eq!(restored.poll_command(), Some(Command::Switch(v1.clone())));
    restored.handle_switched(secs(99), Ok(()));
    let (outcome, _) = run(&mut restored, secs(99), None);
    assert!(matches!(outcome, Outcome::Failed { back_on: Some(ref b), .. } if *b == v1));
    assert_eq!(restored.current(), Some(&v1));
}
