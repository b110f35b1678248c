use super::*;
use domain::FirebaseUid;
use ports_testing::{InMemoryObjectStore, InMemoryStore, ObjectClient as _};

struct World {
    store: Arc<InMemoryStore>,
    objects: Arc<InMemoryObjectStore>,
    service: UploadService,
    cleanup: CleanUpUploads,
}

fn world() -> World {
    let store = Arc::new(InMemoryStore::new());
    let objects = Arc::new(InMemoryObjectStore::new());
    let settings = UploadSettings::default();
    World {
        service: UploadService::new(
            store.clone(),
            objects.clone(),
            ProfileService::new(store.clone()),
            settings.clone(),
        ),
        cleanup: CleanUpUploads::new(store.clone(), objects.clone(), settings),
        store,
        objects,
    }
}

fn caller(uid: &str) -> VerifiedIdentity {
    VerifiedIdentity::new(FirebaseUid::parse(uid).unwrap())
}

const MEDIA: &str = "https://api.example.com/media";

async fn uploaded_avatar(w: &World, who: &VerifiedIdentity, bytes: usize) -> CompletedView {
    let started = w
        .service
        .start(who, UploadPurpose::Avatar, "image/png", bytes as u64)
        .await
        .unwrap();
    assert_eq!(
        w.objects.post_form(&started.form, vec![9; bytes]).await,
        204
    );
    w.service
        .complete(who, started.upload.id, MEDIA)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_completed_avatar_becomes_the_photo_and_the_one_it_replaced_goes_after_the_grace() {
    let w = world();
    let ada = caller("ada");
    let first = uploaded_avatar(&w, &ada, 100).await;
    let id = first.upload.upload.id;
    assert_eq!(first.upload.upload.status, UploadStatus::Completed);
    assert_eq!(first.upload.upload.size, 100);
    assert!(first.upload.url.is_some(), "a completed upload has a link");
    let photo = first.profile.unwrap().photo_url.unwrap();
    assert_eq!(photo.as_str(), format!("{MEDIA}/{id}"));
    assert_eq!(
        w.service.avatar_link(id).await.unwrap(),
        first.upload.url,
        "/media/<id> leads to the object"
    );
    // Completing again changes nothing.
    let again = w.service.complete(&ada, id, MEDIA).await.unwrap();
    assert_eq!(again.upload.upload, first.upload.upload);

    let second = uploaded_avatar(&w, &ada, 50).await;
    let second_id = second.upload.upload.id;
    assert_eq!(
        second.profile.unwrap().photo_url.unwrap().as_str(),
        format!("{MEDIA}/{second_id}")
    );
    assert_eq!(w.objects.keys().len(), 2, "the old avatar stays a while");
    let grace = UploadSettings::default().replaced_grace;
    let now = Utc::now();
    assert_eq!(w.cleanup.run_once(now).await.unwrap(), 0);
    let later = now + chrono_duration(grace) + chrono::Duration::seconds(1);
    assert_eq!(w.cleanup.run_once(later).await.unwrap(), 1);
    assert_eq!(
        w.objects.keys(),
        vec![second.upload.upload.object_key.clone()]
    );
    assert_eq!(w.service.avatar_link(id).await.unwrap(), None);
    assert!(w.service.avatar_link(second_id).await.unwrap().is_some());
}

#[tokio::test]
async fn limits_are_enforced_before_anything_is_signed() {
    let w = world();
    let ada = caller("ada");
    assert!(matches!(
        w.service
            .start(&ada, UploadPurpose::Avatar, "text/html", 10)
            .await,
        Err(UploadError::Invalid(InvalidUpload::ContentType(_)))
    ));
    assert!(matches!(
        w.service
            .start(&ada, UploadPurpose::Avatar, "image/png", 6 * 1024 * 1024)
            .await,
        Err(UploadError::Invalid(InvalidUpload::Size(_)))
    ));
    let max = UploadSettings::default().max_pending;
    for _ in 0..max {
        w.service
            .start(&ada, UploadPurpose::Attachment, "application/pdf", 10)
            .await
            .unwrap();
    }
    assert!(matches!(
        w.service
            .start(&ada, UploadPurpose::Attachment, "application/pdf", 10)
            .await,
        Err(UploadError::TooManyPending { max: m }) if m == max
    ));
    // Another user is not affected.
    w.service
        .start(&caller("bob"), UploadPurpose::Avatar, "image/png", 10)
        .await
        .unwrap();
}

#[tokio::test]
async fn completion_checks_the_stored_object_and_the_owner() {
    let w = world();
    let (ada, bob) = (caller("ada"), caller("bob"));
    let started = w
        .service
        .start(&ada, UploadPurpose::Avatar, "image/png", 10)
        .await
        .unwrap();
    let id = started.upload.id;
    assert!(matches!(
        w.service.complete(&ada, id, MEDIA).await,
        Err(UploadError::NotUploaded)
    ));
    // Bob cannot complete (or learn about) Ada's upload.
    w.service
        .start(&bob, UploadPurpose::Avatar, "image/png", 10)
        .await
        .unwrap();
    assert!(matches!(
        w.service.complete(&bob, id, MEDIA).await,
        Err(UploadError::NotFound)
    ));
    // An object of another type under the key (a store that enforced
    // less than the policy) is refused and deleted.
    w.objects.put(
        &started.upload.object_key,
        "text/html",
        b"<script>".to_vec(),
    );
    assert!(matches!(
        w.service.complete(&ada, id, MEDIA).await,
        Err(UploadError::Rejected(_))
    ));
    assert!(w.objects.keys().is_empty());
    let profile = ProfileService::new(w.store.clone())
        .get(&ada)
        .await
        .unwrap();
    assert_eq!(profile.photo_url, None);
}

#[tokio::test]
async fn abandoned_uploads_are_deleted_once_their_form_expired_long_enough() {
    let w = world();
    let ada = caller("ada");
    let started = w
        .service
        .start(&ada, UploadPurpose::Attachment, "application/pdf", 10)
        .await
        .unwrap();
    assert_eq!(w.objects.post_form(&started.form, vec![1; 10]).await, 204);
    let s = UploadSettings::default();
    let just_expired = started.upload.expires_at + chrono::Duration::seconds(1);
    assert_eq!(w.cleanup.run_once(just_expired).await.unwrap(), 0);
    let abandoned = started.upload.expires_at
        + chrono_duration(s.abandoned_after)
        + chrono::Duration::seconds(1);
    assert_eq!(w.cleanup.run_once(abandoned).await.unwrap(), 1);
    assert!(w.objects.keys().is_empty());
    assert!(matches!(
        w.service.complete(&ada, started.upload.id, MEDIA).await,
        Err(UploadError::NotFound)
    ));
}

#[tokio::test]
async fn posting_the_form_again_after_completion_cannot_swap_what_was_checked() {
    let w = world();
    let ada = caller("ada");
    let started = w
        .service
        .start(&ada, UploadPurpose::Avatar, "image/png", 10)
        .await
        .unwrap();
    assert_eq!(w.objects.post_form(&started.form, vec![1; 10]).await, 204);
    let done = w
        .service
        .complete(&ada, started.upload.id, MEDIA)
        .await
        .unwrap();
    let stored = done.upload.upload.object_key.clone();
    assert_ne!(
        stored, started.upload.object_key,
        "kept where no form writes"
    );
    // The form is still valid for minutes: whatever it brings now lands
    // where nothing reads it.
    assert_eq!(w.objects.post_form(&started.form, vec![6; 20]).await, 204);
    let link = w
        .service
        .avatar_link(started.upload.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.objects.get(&link).await, Some(vec![1; 10]));
    let again = w
        .service
        .complete(&ada, started.upload.id, MEDIA)
        .await
        .unwrap();
    assert_eq!(
        (again.upload.upload.size, again.upload.upload.object_key),
        (10, stored)
    );
}

#[tokio::test]
async fn a_user_cannot_store_past_their_quota() {
    let store = Arc::new(InMemoryStore::new());
    let objects = Arc::new(InMemoryObjectStore::new());
    let settings = UploadSettings {
        max_files: 2,
        max_bytes: 1000,
        ..UploadSettings::default()
    };
    let service = UploadService::new(
        store.clone(),
        objects.clone(),
        ProfileService::new(store.clone()),
        settings,
    );
    let ada = caller("ada");
    let mut completed = 0;
    for size in [400_u64, 400] {
        let started = service
            .start(&ada, UploadPurpose::Attachment, "image/png", size)
            .await
            .unwrap();
        assert_eq!(
            objects
                .post_form(&started.form, vec![1; size as usize])
                .await,
            204
        );
        service
            .complete(&ada, started.upload.id, MEDIA)
            .await
            .unwrap();
        completed += 1;
    }
    assert_eq!(completed, 2);
    // A third file: refused before any form is signed.
    assert!(matches!(
        service
            .start(&ada, UploadPurpose::Attachment, "image/png", 1)
            .await,
        Err(UploadError::QuotaExceeded {
            max_files: 2,
            max_bytes: 1000
        })
    ));
    // Another user has their own.
    let bob = caller("bob");
    let small = service
        .start(&bob, UploadPurpose::Attachment, "image/png", 10)
        .await
        .unwrap();
    // Announced small, uploaded big (the form allows the purpose's
    // limit): refused at completion and not kept.
    let bytes = 1001;
    assert_eq!(objects.post_form(&small.form, vec![2; bytes]).await, 204);
    assert!(matches!(
        service.complete(&bob, small.upload.id, MEDIA).await,
        Err(UploadError::QuotaExceeded { .. })
    ));
    let bobs = domain::Upload::user_prefix(small.upload.user_id);
    assert!(
        objects
            .keys()
            .iter()
            .all(|k| !k.starts_with(&format!("{bobs}stored/"))),
        "{:?}",
        objects.keys()
    );
}
