//! Suite-level tests, for every suite: the batch paths against the serial reference
//! (`reference.rs`), round trips, tamper detection, malformed input, and the GCM vectors.

use super::keys::{Key128, NonceSalt};
use super::reference::Reference;
use super::*;
use crate::rng::Rng;
use proptest::prelude::*;

/// One datagram of a generated batch: (header_len, body_len, seq).
type Shape = (usize, usize, u64);

fn keys_for(suite: SuiteId, secret: [u8; 32], session_id: u64) -> DirectionKeys {
    let ks = KeySchedule::new(&SessionSecret(secret), &[3; 32], &[4; 32], suite, session_id);
    ks.direction_keys(Direction::ClientToServer, (session_id % 4) as u8)
}

/// Plaintext datagrams of the given shapes (header ‖ body ‖ zeroed tag space), with `seq`
/// in the header's first 8 bytes (every header here is at least that long).
fn datagrams(shapes: &[Shape], fill_seed: u64) -> Vec<Vec<u8>> {
    let mut bufs = random_datagrams(shapes, fill_seed);
    for (buf, &(_, _, seq)) in bufs.iter_mut().zip(shapes) {
        buf[..8].copy_from_slice(&seq.to_le_bytes());
    }
    bufs
}

/// Like [`datagrams`], but all random: the header may be shorter than the 8 bytes of `seq`
/// (the suites only authenticate it; the session layer is what reads `seq` from it).
fn random_datagrams(shapes: &[Shape], fill_seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(fill_seed);
    shapes
        .iter()
        .map(|&(header_len, body_len, _)| {
            let mut buf = vec![0u8; header_len + body_len + TAG_LEN];
            rng.fill_bytes(&mut buf[..header_len + body_len]);
            buf
        })
        .collect()
}

fn seal_all(suite: &mut dyn Suite, shapes: &[Shape], bufs: &mut [Vec<u8>]) {
    let mut jobs: Vec<Job<'_>> =
        shapes.iter().zip(bufs.iter_mut()).map(|(s, b)| Job::new(s.2, s.0, b)).collect();
    suite.seal_batch(&mut jobs);
}

fn open_all(suite: &mut dyn Suite, shapes: &[Shape], bufs: &mut [Vec<u8>]) -> Vec<bool> {
    let mut jobs: Vec<Job<'_>> =
        shapes.iter().zip(bufs.iter_mut()).map(|(s, b)| Job::new(s.2, s.0, b)).collect();
    suite.open_batch(&mut jobs);
    jobs.iter().map(|j| j.ok).collect()
}

fn shapes(max_batch: usize) -> impl Strategy<Value = Vec<Shape>> {
    prop::collection::vec((24usize..=40, 0usize..=9000, any::<u64>()), 1..=max_batch)
}

proptest! {
    // Every case runs all three suites; the counts keep the whole module at a few seconds.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Batch seal is byte-identical to the serial reference; batch open restores the plaintext,
    /// and the reference opens what the batch sealed.
    #[test]
    fn batch_matches_serial_reference(
        secret in any::<[u8; 32]>(),
        session in any::<u64>(),
        shapes in shapes(MAX_BATCH),
        fill in any::<u64>(),
    ) {
        for suite_id in SuiteId::ALL {
            let keys = keys_for(suite_id, secret, session);
            let mut suite = new_suite(&keys);
            let mut reference = Reference::new(&keys);
            let plain = datagrams(&shapes, fill);

            let mut batch = plain.clone();
            seal_all(suite.as_mut(), &shapes, &mut batch);
            for (i, (s, p)) in shapes.iter().zip(&plain).enumerate() {
                let mut serial = p.clone();
                reference.seal(s.2, s.0, &mut serial);
                prop_assert!(serial == batch[i], "datagram {} of {:?} differs", i, s);
                prop_assert_eq!(&batch[i][..s.0], &p[..s.0], "header must stay in the clear");
            }

            let mut opened = batch.clone();
            let ok = open_all(suite.as_mut(), &shapes, &mut opened);
            for (i, s) in shapes.iter().enumerate() {
                prop_assert!(ok[i], "datagram {} did not open", i);
                let end = opened[i].len() - TAG_LEN;
                prop_assert_eq!(&opened[i][..end], &plain[i][..end]);
                let mut serial = batch[i].clone();
                prop_assert!(reference.open(s.2, s.0, &mut serial));
                prop_assert_eq!(&serial[..end], &plain[i][..end]);
            }
        }
    }

    /// Flipping any one bit (header, body or tag) makes open fail and leaves the datagram
    /// unchanged; untouched datagrams of the same batch still open.
    #[test]
    fn any_flipped_bit_fails_and_leaves_body_untouched(
        secret in any::<[u8; 32]>(),
        shapes in shapes(16),
        fill in any::<u64>(),
        flips in prop::collection::vec(prop::option::of(any::<prop::sample::Index>()), 16),
        bit in 0u8..8,
    ) {
        for suite_id in SuiteId::ALL {
            let mut suite = new_suite(&keys_for(suite_id, secret, 1));
            let plain = datagrams(&shapes, fill);
            let mut bufs = plain.clone();
            seal_all(suite.as_mut(), &shapes, &mut bufs);
            let mut tampered = vec![false; shapes.len()];
            for (i, flip) in flips.iter().enumerate().take(shapes.len()) {
                if let Some(at) = flip {
                    let at = at.index(bufs[i].len());
                    bufs[i][at] ^= 1 << bit;
                    tampered[i] = true;
                }
            }
            let before = bufs.clone();
            let ok = open_all(suite.as_mut(), &shapes, &mut bufs);
            for i in 0..shapes.len() {
                if tampered[i] {
                    prop_assert!(!ok[i], "tampered datagram {} opened", i);
                    prop_assert!(bufs[i] == before[i], "a failed open changed datagram {}", i);
                } else {
                    prop_assert!(ok[i]);
                    let end = bufs[i].len() - TAG_LEN;
                    prop_assert_eq!(&bufs[i][..end], &plain[i][..end]);
                }
            }
        }
    }

    /// `aes128-cfb-cmac` batches as the data plane drives them: one header length per batch
    /// (any, so that every alignment of CMAC blocks against CFB blocks occurs), random body
    /// lengths that mostly end in a partial block, 1 to 64 datagrams.
    /// Seal is byte-identical to the serial reference; open restores the plaintext; tampered
    /// datagrams fail and stay as they were while the rest of the batch opens.
    #[test]
    fn cfb_cmac_batches_match_reference_with_random_lengths(
        secret in any::<[u8; 32]>(),
        header_len in 0usize..=48,
        bodies in prop::collection::vec((0usize..=1500, any::<u64>(), any::<bool>()), 1..=MAX_BATCH),
        fill in any::<u64>(),
    ) {
        let keys = keys_for(SuiteId::Aes128CfbCmac, secret, 9);
        let (mut suite, mut reference) = (new_suite(&keys), Reference::new(&keys));
        let shapes: Vec<Shape> = bodies.iter().map(|&(len, seq, _)| (header_len, len, seq)).collect();
        let plain = random_datagrams(&shapes, fill);
        let mut bufs = plain.clone();
        seal_all(suite.as_mut(), &shapes, &mut bufs);
        for (i, s) in shapes.iter().enumerate() {
            let mut serial = plain[i].clone();
            reference.seal(s.2, s.0, &mut serial);
            prop_assert!(serial == bufs[i], "datagram {} of {:?} differs", i, s);
        }
        for (buf, &(len, seq, tamper)) in bufs.iter_mut().zip(&bodies) {
            if tamper {
                let at = (seq as usize) % buf.len();
                buf[at] ^= 1 << (len % 8);
            }
        }
        let before = bufs.clone();
        let ok = open_all(suite.as_mut(), &shapes, &mut bufs);
        for (i, &(_, _, tamper)) in bodies.iter().enumerate() {
            prop_assert_eq!(ok[i], !tamper, "datagram {}", i);
            if tamper {
                prop_assert!(bufs[i] == before[i], "a failed open changed datagram {}", i);
            } else {
                let end = bufs[i].len() - TAG_LEN;
                prop_assert_eq!(&bufs[i][..end], &plain[i][..end], "datagram {}", i);
            }
        }
    }

    /// Open never panics on any bytes or any header length, and accepts nothing it was not given.
    #[test]
    fn open_never_panics_on_any_input(
        bufs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..=8),
        header_lens in prop::collection::vec(0usize..200, 8),
        seq in any::<u64>(),
    ) {
        for suite_id in SuiteId::ALL {
            let mut suite = new_suite(&keys_for(suite_id, [9; 32], 2));
            let mut bufs = bufs.clone();
            let before = bufs.clone();
            let mut jobs: Vec<Job<'_>> = bufs
                .iter_mut()
                .zip(&header_lens)
                .map(|(b, &h)| Job::new(seq, h, b))
                .collect();
            suite.open_batch(&mut jobs);
            prop_assert!(jobs.iter().all(|j| !j.ok));
            drop(jobs);
            prop_assert_eq!(bufs, before);
        }
    }
}

#[test]
fn malformed_jobs_are_rejected_and_untouched() {
    for suite_id in SuiteId::ALL {
        let mut suite = new_suite(&keys_for(suite_id, [5; 32], 3));
        let (mut a, mut b, mut c) = (vec![1u8; 15], vec![2u8; 40], vec![3u8; 0]);
        assert!(!suite.open(1, 0, &mut a), "{suite_id:?}: shorter than a tag");
        assert!(!suite.open(1, 25, &mut b), "{suite_id:?}: header runs into the tag");
        assert!(!suite.open(1, usize::MAX, &mut b), "{suite_id:?}: absurd header length");
        assert!(!suite.open(1, 0, &mut c), "{suite_id:?}: empty");
        assert_eq!((a, b), (vec![1u8; 15], vec![2u8; 40]));
    }
}

/// A datagram sealed under one direction's keys does not open under the other's. Under GCM a
/// wrong sequence number also fails (the nonce is bound in); under the CMAC suites the
/// sequence number is authenticated as part of the header, which the caller writes it into
/// (see `Job`), so header tampering is what the bit-flip property covers.
#[test]
fn wrong_seq_or_wrong_keys_fail() {
    for suite_id in SuiteId::ALL {
        let ks = KeySchedule::new(&SessionSecret([1; 32]), &[2; 32], &[3; 32], suite_id, 7);
        let mut tx = new_suite(&ks.direction_keys(Direction::ClientToServer, 0));
        let mut other = new_suite(&ks.direction_keys(Direction::ServerToClient, 0));
        let mut buf = vec![0x5a; 24 + 100 + TAG_LEN];
        tx.seal(10, 24, &mut buf);
        let sealed = buf.clone();
        if suite_id == SuiteId::Aes128Gcm {
            assert!(!tx.open(11, 24, &mut buf), "{suite_id:?}: wrong seq opened");
        }
        assert!(!other.open(10, 24, &mut buf), "{suite_id:?}: wrong direction opened");
        assert_eq!(buf, sealed);
        assert!(tx.open(10, 24, &mut buf));
    }
}

/// More than MAX_BATCH jobs in one call are handled in chunks, identically to one at a time.
#[test]
fn batches_larger_than_max_batch_are_chunked() {
    for suite_id in SuiteId::ALL {
        let keys = keys_for(suite_id, [8; 32], 4);
        let mut suite = new_suite(&keys);
        let mut reference = Reference::new(&keys);
        let shapes: Vec<Shape> =
            (0..MAX_BATCH * 2 + 3).map(|i| (24 + i % 17, (i * 37) % 300, i as u64)).collect();
        let plain = datagrams(&shapes, 11);
        let mut bufs = plain.clone();
        seal_all(suite.as_mut(), &shapes, &mut bufs);
        for (i, s) in shapes.iter().enumerate() {
            let mut serial = plain[i].clone();
            reference.seal(s.2, s.0, &mut serial);
            assert_eq!(serial, bufs[i], "{suite_id:?} datagram {i}");
        }
        assert!(open_all(suite.as_mut(), &shapes, &mut bufs).iter().all(|&ok| ok));
        assert_eq!(
            bufs.iter().map(|b| b.len()).sum::<usize>(),
            plain.iter().map(|b| b.len()).sum()
        );
    }
}

/// The encrypting suites actually encrypt; the integrity suite leaves the body in the clear.
#[test]
fn encrypting_suites_hide_the_body() {
    for suite_id in SuiteId::ALL {
        let mut suite = new_suite(&keys_for(suite_id, [6; 32], 5));
        let mut buf = vec![0u8; 24 + 64 + TAG_LEN];
        suite.seal(1, 24, &mut buf);
        let body_clear = buf[24..88].iter().all(|&b| b == 0);
        assert_eq!(body_clear, !suite_id.is_encrypting(), "{suite_id:?}");
        assert_eq!(suite.id(), suite_id);
    }
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// McGrew–Viega GCM test cases 2, 3 and 4 (AES-128), through our suite with seq 0 (so the
/// nonce is the salt) and the AAD as the header.
#[test]
fn gcm_mcgrew_viega_test_cases_2_to_4() {
    let p3 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
              1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let c3 = "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e\
              21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985";
    let cases = [
        // (key, iv, aad, plaintext, ciphertext, tag)
        (
            "00000000000000000000000000000000",
            "000000000000000000000000",
            "",
            "00000000000000000000000000000000".to_string(),
            "0388dace60b6a392f328c2b971b2fe78".to_string(),
            "ab6e47d42cec13bdf53a67b21257bddf",
        ),
        (
            "feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "",
            p3.to_string(),
            c3.to_string(),
            "4d5c2af327cd64a62cf35abd2ba6fab4",
        ),
        (
            "feffe9928665731c6d6a8f9467308308",
            "cafebabefacedbaddecaf888",
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            p3[..120].to_string(),
            c3[..120].to_string(),
            "5bc94fbc3221a5db94fae95ae7121a47",
        ),
    ];
    for (n, (key, iv, aad, pt, ct, tag)) in cases.into_iter().enumerate() {
        let mut k = [0u8; 16];
        k.copy_from_slice(&unhex(key));
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&unhex(iv));
        let keys = DirectionKeys::from_material(keys::SuiteKeys::Gcm {
            key: Key128(k),
            salt: NonceSalt(salt),
        });
        let mut suite = new_suite(&keys);
        let (aad, pt) = (unhex(aad), unhex(&pt));
        let mut buf = [aad.clone(), pt.clone(), vec![0; TAG_LEN]].concat();
        suite.seal(0, aad.len(), &mut buf);
        let expected = [aad.clone(), unhex(&ct), unhex(tag)].concat();
        assert_eq!(buf, expected, "test case {}", n + 2);
        assert!(suite.open(0, aad.len(), &mut buf));
        assert_eq!(&buf[aad.len()..buf.len() - TAG_LEN], &pt[..]);
    }
}

/// The GCM nonce puts the sequence number big-endian into the salt's last 8 bytes.
#[test]
fn gcm_nonce_layout() {
    let salt = NonceSalt([0xff; 12]);
    let n = gcm::nonce(&salt, 0x0102_0304_0506_0708);
    assert_eq!(n[..], [0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7]);
}

/// The CFB IV is AES(iv_key, seq LE ‖ 0^8): checked against a direct AES computation.
#[test]
fn cfb_iv_is_aes_of_le_seq() {
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    let input = multibuf::iv_input(0x0102_0304_0506_0708);
    assert_eq!(input[..], [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    // A one-block body under a zero key: ciphertext = plaintext XOR E(enc, IV).
    let zero = Key128([0; 16]);
    let mut suite = cfb_cmac::CfbCmac::new(&zero, &zero, &zero);
    let mut buf = vec![0u8; 16 + TAG_LEN];
    suite.seal(0x0102_0304_0506_0708, 0, &mut buf);
    let aes = aes::Aes128::new(&[0u8; 16].into());
    let mut expect = input;
    aes.encrypt_block(&mut expect);
    aes.encrypt_block(&mut expect);
    assert_eq!(buf[..16], expect[..]);
}
