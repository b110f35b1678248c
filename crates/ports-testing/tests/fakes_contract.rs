//! The in-memory fakes pass the same contract suites as the real adapters.

mod user_store {
    use ports_testing::InMemoryStore;
    use std::sync::Arc;

    ports_testing::user_store_contract!(async { Arc::new(InMemoryStore::new()) });
}

mod outbox {
    use ports_testing::InMemoryStore;
    use std::sync::Arc;

    ports_testing::outbox_contract!(async { Arc::new(InMemoryStore::new()) });
}

mod cache {
    use ports_testing::InMemoryCache;
    use std::sync::Arc;

    ports_testing::cache_contract!(async { Arc::new(InMemoryCache::new()) });
}

mod push_sender {
    use ports_testing::RecordingPushSender;
    use std::sync::Arc;

    ports_testing::push_sender_contract!(async { Arc::new(RecordingPushSender::new()) });
}

mod welcome_ledger {
    use ports::WelcomeLedger;
    use ports_testing::InMemoryWelcomeLedger;
    use std::sync::Arc;

    ports_testing::welcome_ledger_contract!(async {
        Arc::new(InMemoryWelcomeLedger::new()) as Arc<dyn WelcomeLedger>
    });
}

mod outbox_leadership {
    use ports_testing::InMemoryStore;
    use std::sync::Arc;

    ports_testing::outbox_leadership_contract!(async {
        let store = Arc::new(InMemoryStore::new());
        let first: Box<dyn ports::Outbox> = Box::new(store.handle());
        let second: Box<dyn ports::Outbox> = Box::new(store.handle());
        (store, first, second)
    });
}

mod topic_history {
    use ports_testing::InMemoryFanout;
    use std::sync::Arc;

    ports_testing::topic_history_contract!(async { Arc::new(InMemoryFanout::new()) });
}

mod presence {
    use ports_testing::InMemoryPresence;
    use std::sync::Arc;

    ports_testing::presence_contract!(async { Arc::new(InMemoryPresence::new()) });
}

mod object_store {
    use ports_testing::InMemoryObjectStore;
    use ports_testing::contract::storage::StoreUnderTest;
    use std::sync::Arc;

    ports_testing::object_store_contract!(async {
        let store = Arc::new(InMemoryObjectStore::new());
        StoreUnderTest {
            store: store.clone(),
            client: store,
            prefix: "t/".into(),
            guard: Box::new(()),
        }
    });
}

mod upload_repository {
    use ports_testing::InMemoryStore;
    use ports_testing::contract::storage::UploadsUnderTest;
    use std::sync::Arc;

    ports_testing::upload_repository_contract!(async {
        let store = Arc::new(InMemoryStore::new());
        UploadsUnderTest {
            uploads: store.clone(),
            users: store,
            guard: Box::new(()),
        }
    });
}
