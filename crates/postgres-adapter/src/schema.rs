//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    users (id) {
        id -> Uuid,
        firebase_uid -> Text,
        email -> Nullable<Text>,
        display_name -> Nullable<Text>,
        photo_url -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        verified_email -> Nullable<Text>,
    }
}

diesel::table! {
    push_tokens (id) {
        id -> Uuid,
        token -> Text,
        platform -> Text,
        user_id -> Uuid,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> Int8,
        event_id -> Uuid,
        topic -> Text,
        event_type -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        published_at -> Nullable<Timestamptz>,
        claimed_until -> Nullable<Timestamptz>,
        attempts -> Int4,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    welcome_mails (uid_hash) {
        uid_hash -> Bytea,
        recipient_hash -> Nullable<Bytea>,
        holder_job -> Uuid,
        holder_lease -> Int8,
        claimed_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    account_deletions (firebase_uid) {
        firebase_uid -> Text,
        deleted_at -> Timestamptz,
    }
}

diesel::joinable!(push_tokens -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, push_tokens, outbox, welcome_mails, uploads);

diesel::table! {
    uploads (id) {
        id -> Uuid,
        user_id -> Uuid,
        purpose -> Text,
        object_key -> Text,
        content_type -> Text,
        size -> Int8,
        status -> Text,
        created_at -> Timestamptz,
        expires_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        replaced_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(uploads -> users (user_id));
