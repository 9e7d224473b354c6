//! [`FileBlobs`] against the rules the in-process fake enforces: the same cases run on both,
//! a differential property test drives both with one random sequence of calls, crashes are
//! injected between the data and its record. (The upload engine over `FileBlobs` is tested
//! in `site::azure::upload_tests`, above `transfer` in the layers.)

use super::*;
use crate::cloud::fake::pageblob::FakePageBlobs;
use proptest::prelude::*;

fn name() -> BlobName {
    BlobName::new("ctr", "b.vhd")
}

fn files() -> (tempfile::TempDir, FileBlobs) {
    let dir = tempfile::tempdir().unwrap();
    let f = FileBlobs::new(dir.path().join("acct")).without_sync();
    (dir, f)
}

/// The fake's `the_fake_enforces_azure_rules`, on any store.
fn enforces_azure_rules(f: &dyn PageBlobStore, md: &dyn PageBlobStore) {
    assert_eq!(
        f.create(&name(), 4096).unwrap_err().code(),
        Some("ContainerNotFound")
    );
    f.create_container("ctr").unwrap();
    assert_eq!(
        f.create(&name(), 1000).unwrap_err().code(),
        Some("InvalidHeaderValue")
    );
    assert_eq!(
        f.create(&name(), MAX_PAGE_BLOB + 512).unwrap_err().code(),
        Some("InvalidHeaderValue")
    );
    f.create(&name(), 8 << 20).unwrap();
    let e = f.put_pages(&name(), 100, &[1; 512]).unwrap_err();
    assert_eq!(
        (e.code(), e.retryable()),
        (Some("InvalidHeaderValue"), false)
    );
    let e = f.put_pages(&name(), 0, &[1; 500]).unwrap_err();
    assert_eq!(e.code(), Some("InvalidHeaderValue"));
    let e = f
        .put_pages(&name(), 0, &vec![1; MAX_PUT as usize + 512])
        .unwrap_err();
    assert_eq!(e.code(), Some("RequestBodyTooLarge"));
    let e = f
        .put_pages(&name(), (8 << 20) - 512, &[1; 1024])
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidPageRange"));
    f.put_pages(&name(), 0, &vec![1; MAX_PUT as usize]).unwrap();
    let e = f.clear_pages(&name(), 0, 0).unwrap_err();
    assert_eq!(e.code(), Some("InvalidHeaderValue"));
    let mut buf = [0u8; 1024];
    let e = f.read(&name(), (8 << 20) - 512, &mut buf).unwrap_err();
    assert_eq!(e.code(), Some("InvalidRange"));
    let e = f
        .put_pages(&BlobName::new("ctr", "none"), 0, &[1; 512])
        .unwrap_err();
    assert_eq!(e.code(), Some("BlobNotFound"));
    md.create_container("ctr").unwrap();
    assert_eq!(
        md.create(&name(), 1 << 20).unwrap_err().code(),
        Some("InvalidUploadSize")
    );
    md.create(&name(), (20 << 20) + 512).unwrap();
    assert!(
        f.properties(&BlobName::new("ctr", "none"))
            .unwrap()
            .is_none()
    );
    assert!(
        f.properties(&BlobName::new("xyz", "none"))
            .unwrap()
            .is_none()
    );
}

/// The fake's `pages_write_clear_and_list`, with metadata and Content-MD5, on any store.
fn writes_clears_and_lists(f: &dyn PageBlobStore) {
    f.create_container("ctr").unwrap();
    f.create(&name(), 4 << 20).unwrap();
    f.put_pages(&name(), 1024, &[7; 2048]).unwrap();
    f.put_pages(&name(), 3 << 20, &[9; 512]).unwrap();
    assert_eq!(
        f.page_ranges(&name()).unwrap(),
        vec![(1024, 2048), (3 << 20, 512)]
    );
    f.clear_pages(&name(), 1536, 512).unwrap();
    assert_eq!(
        f.page_ranges(&name()).unwrap(),
        vec![(1024, 512), (2048, 1024), (3 << 20, 512)]
    );
    let mut buf = vec![0xff; 4096];
    f.read(&name(), 0, &mut buf).unwrap();
    assert!(buf[..1024].iter().all(|&b| b == 0));
    assert!(buf[1024..1536].iter().all(|&b| b == 7));
    assert!(buf[1536..2048].iter().all(|&b| b == 0));
    assert!(buf[2048..3072].iter().all(|&b| b == 7));
    assert!(buf[3072..].iter().all(|&b| b == 0));
    let md: BTreeMap<String, String> = [("ec2azure_state".to_string(), "complete".to_string())]
        .into_iter()
        .collect();
    f.set_metadata(&name(), &md).unwrap();
    f.set_content_md5(&name(), &[0xab; 16]).unwrap();
    let p = f.properties(&name()).unwrap().unwrap();
    assert_eq!(
        (p.len, p.page_blob, &p.metadata, p.content_md5),
        (4 << 20, true, &md, Some([0xab; 16]))
    );
    // Creating again empties the blob and keeps nothing of the old one.
    f.create(&name(), 1 << 20).unwrap();
    assert!(f.page_ranges(&name()).unwrap().is_empty());
    let p = f.properties(&name()).unwrap().unwrap();
    assert_eq!((p.len, p.metadata.len(), p.content_md5), (1 << 20, 0, None));
    let mut buf = vec![0xff; 4096];
    f.read(&name(), 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
}

#[test]
fn the_fake_and_the_files_enforce_the_same_rules() {
    enforces_azure_rules(&FakePageBlobs::new(), &FakePageBlobs::managed_disk());
    let (_d, f) = files();
    let (_e, md) = files();
    enforces_azure_rules(&f, &md.managed_disk());
}

#[test]
fn the_fake_and_the_files_write_clear_and_list_alike() {
    writes_clears_and_lists(&FakePageBlobs::new());
    let (_d, f) = files();
    writes_clears_and_lists(&f);
}

#[test]
fn blobs_outlive_the_store_and_names_stay_in_their_folder() {
    let (d, f) = files();
    f.create_container("ctr").unwrap();
    let odd = BlobName::new("ctr", "../../etc/passwd.vhd");
    f.create(&odd, 4096).unwrap();
    f.put_pages(&odd, 512, &[5; 512]).unwrap();
    f.create(&name(), 512).unwrap();
    // Nothing was written outside the container's folder.
    let ctr = d.path().join("acct").join("ctr");
    let mut entries: Vec<String> = std::fs::read_dir(&ctr)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // Replaced sidecars are removed in the background under a temporary name.
        .filter(|n| !n.ends_with(".partial"))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd%2Evhd",
            ".%2E%2E%2F%2E%2E%2Fetc%2Fpasswd%2Evhd.json",
            ".b%2Evhd.json",
            "b%2Evhd"
        ]
    );
    drop(f);
    let again = FileBlobs::new(d.path().join("acct"));
    assert_eq!(again.containers().unwrap(), ["ctr"]);
    assert_eq!(
        again.list("ctr").unwrap(),
        ["../../etc/passwd.vhd", "b.vhd"]
    );
    let mut buf = [0u8; 1024];
    again.read(&odd, 0, &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0) && buf[512..].iter().all(|&b| b == 5));
    assert!(again.delete(&odd).unwrap());
    assert!(!again.delete(&odd).unwrap());
    assert!(again.properties(&odd).unwrap().is_none());
    assert_eq!(again.list("ctr").unwrap(), ["b.vhd"]);
    assert_eq!(
        again.create_container("Bad_Name").unwrap_err().code(),
        Some("InvalidResourceName")
    );
    assert_eq!(
        again.list("nope").unwrap_err().code(),
        Some("ContainerNotFound")
    );
}

#[test]
fn a_crash_between_the_data_and_its_record_leaves_the_old_ranges() {
    let (d, f) = files();
    f.create_container("ctr").unwrap();
    f.create(&name(), 1 << 20).unwrap();
    f.put_pages(&name(), 0, &[1; 1024]).unwrap();
    // Put Page: the bytes reach the file, the process dies before the sidecar is written.
    f.crash_at(Some(CrashAt::PutAfterData));
    assert!(f.put_pages(&name(), 4096, &[2; 2048]).is_err());
    let reopened = FileBlobs::new(d.path().join("acct"));
    assert_eq!(reopened.page_ranges(&name()).unwrap(), vec![(0, 1024)]);
    let mut buf = vec![0xffu8; 8192];
    reopened.read(&name(), 0, &mut buf).unwrap();
    assert!(buf[..1024].iter().all(|&b| b == 1));
    assert!(
        buf[1024..].iter().all(|&b| b == 0),
        "unrecorded bytes must read as zeros"
    );
    // Clear Page: the record goes, the process dies before the hole is punched.
    f.crash_at(Some(CrashAt::ClearAfterSidecar));
    assert!(f.clear_pages(&name(), 0, 512).is_err());
    assert_eq!(reopened.page_ranges(&name()).unwrap(), vec![(512, 512)]);
    reopened.read(&name(), 0, &mut buf).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0) && buf[512..1024].iter().all(|&b| b == 1));
    // Create over a blob with data: the empty record lands, the file is not yet emptied.
    f.crash_at(Some(CrashAt::CreateAfterSidecar));
    assert!(f.create(&name(), 2 << 20).is_err());
    assert!(reopened.page_ranges(&name()).unwrap().is_empty());
    let mut buf = vec![0xffu8; 8192];
    reopened.read(&name(), 0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(reopened.properties(&name()).unwrap().unwrap().len, 2 << 20);
    // A sidecar that does not decode is an error, never a blob without data.
    std::fs::write(d.path().join("acct/ctr/.b%2Evhd.json"), b"{not json").unwrap();
    let e = reopened.page_ranges(&name()).unwrap_err();
    assert!(e.to_string().contains("does not decode"), "{e}");
}

#[test]
fn parallel_puts_are_all_recorded() {
    let (_d, f) = files();
    f.create_container("ctr").unwrap();
    f.create(&name(), 64 << 10).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let f = &f;
            s.spawn(move || {
                for i in 0..8u64 {
                    let page = u64::from(t) * 8 + i;
                    f.put_pages(&name(), page * 1024, &[t + 1; 512]).unwrap();
                }
            });
        }
    });
    let ranges = f.page_ranges(&name()).unwrap();
    assert_eq!(ranges.len(), 64);
    assert!(ranges.iter().all(|&(o, l)| o % 1024 == 0 && l == 512));
}

/// One call of the differential test.
#[derive(Debug, Clone)]
enum Call {
    Create(u64),
    Put(u64, u64, u8),
    Clear(u64, u64),
    Read(u64, u64),
    Ranges,
    Meta(u8),
    Md5(u8),
    Props,
}

fn call() -> impl Strategy<Value = Call> {
    // Offsets and lengths in 256-byte steps: misaligned ones on purpose.
    prop_oneof![
        1 => (0u64..40).prop_map(|n| Call::Create(n * 256)),
        4 => (0u64..40, 0u64..12, any::<u8>()).prop_map(|(o, l, b)| Call::Put(o * 256, l * 256, b)),
        2 => (0u64..40, 0u64..12).prop_map(|(o, l)| Call::Clear(o * 256, l * 256)),
        2 => (0u64..40, 0u64..12).prop_map(|(o, l)| Call::Read(o * 256, l * 256)),
        1 => Just(Call::Ranges),
        1 => any::<u8>().prop_map(Call::Meta),
        1 => any::<u8>().prop_map(Call::Md5),
        1 => Just(Call::Props),
    ]
}

/// The outcome of a call, comparable across stores: its value or its error code.
fn outcome(s: &dyn PageBlobStore, c: &Call) -> Result<String, Option<String>> {
    let b = name();
    let r = match *c {
        Call::Create(n) => s.create(&b, n).map(|()| String::new()),
        Call::Put(o, l, v) => s
            .put_pages(&b, o, &vec![v; l as usize])
            .map(|()| String::new()),
        Call::Clear(o, l) => s.clear_pages(&b, o, l).map(|()| String::new()),
        Call::Read(o, l) => {
            let mut buf = vec![0xee; l as usize];
            s.read(&b, o, &mut buf).map(|()| format!("{buf:?}"))
        }
        Call::Ranges => s.page_ranges(&b).map(|r| format!("{r:?}")),
        Call::Meta(v) => {
            let m = [("k".to_string(), v.to_string())].into_iter().collect();
            s.set_metadata(&b, &m).map(|()| String::new())
        }
        Call::Md5(v) => s.set_content_md5(&b, &[v; 16]).map(|()| String::new()),
        Call::Props => s.properties(&b).map(|p| format!("{p:?}")),
    };
    r.map_err(|e| e.code().map(str::to_string))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any sequence of calls answers the same on the files as on the fake, and the files,
    /// reopened, hold what the fake holds.
    #[test]
    fn files_answer_as_the_fake_does(calls in proptest::collection::vec(call(), 1..40)) {
        let fake = FakePageBlobs::new();
        let (d, f) = files();
        fake.create_container("ctr").unwrap();
        f.create_container("ctr").unwrap();
        for c in &calls {
            prop_assert_eq!(outcome(&fake, c), outcome(&f, c), "{:?}", c);
        }
        let reopened = FileBlobs::new(d.path().join("acct"));
        prop_assert_eq!(outcome(&fake, &Call::Ranges), outcome(&reopened, &Call::Ranges));
        prop_assert_eq!(outcome(&fake, &Call::Props), outcome(&reopened, &Call::Props));
        if let Some(all) = fake.contents(&name()) {
            let mut buf = vec![0xee; all.len()];
            reopened.read(&name(), 0, &mut buf).unwrap();
            prop_assert_eq!(buf, all);
        }
    }
}
