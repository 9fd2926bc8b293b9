//! The tree's behaviour case by case, with whole answers asserted: revisions and
//! versions, reads at past revisions (lists included), all-or-nothing transactions,
//! the quota, and what each bad request is told.

use bytes::Bytes;
use concord_service::command::{
    ChildEntry, Guard, Op, OpResult, Query, QueryResponse, ReadOp, ReadResult, Txn,
};
use concord_service::{Limit, Limits, NodeKind, NodeValue, Path, ServiceError, Stat, Tree};

fn p(text: &str) -> Path {
    Path::parse(text, u32::MAX).unwrap()
}

fn write(tree: &mut Tree, op: Op) -> Result<OpResult, ServiceError> {
    tree.apply(&Txn::single(op))
        .map(|(succeeded, mut results)| {
            assert!(succeeded);
            assert_eq!(results.len(), 1);
            results.remove(0)
        })
}

fn blob(path: &str, value: &str) -> Op {
    Op::BlobPut {
        path: p(path),
        value: Bytes::from(value.to_string()),
    }
}

fn dir(path: &str) -> Op {
    Op::Create {
        path: p(path),
        value: NodeValue::Dir,
        parents: false,
    }
}

fn list(tree: &Tree, path: &str, revision: Option<u64>, after: Option<&str>) -> Vec<String> {
    let query = Query {
        revision,
        ops: vec![ReadOp::List {
            path: p(path),
            after: after.map(String::from),
            limit: 10,
        }],
    };
    match &tree.query(&query).unwrap().results[0] {
        ReadResult::List { children, more } => {
            assert!(!more);
            children.iter().map(|child| child.name.clone()).collect()
        }
        other => panic!("{other:?}"),
    }
}

// Proves a write's stat and the namespace revision move as documented: +1 revision
// per changing transaction, version +1 per change, create revision kept.
#[test]
fn revisions_and_versions_move_per_change() {
    let mut tree = Tree::new(Limits::default());
    assert_eq!(
        write(&mut tree, blob("/k", "v1")),
        Ok(OpResult::Written(Stat {
            kind: NodeKind::Blob,
            version: 1,
            create_revision: 1,
            modify_revision: 1,
            children: 0,
            size: 2,
        }))
    );
    assert_eq!(
        write(&mut tree, blob("/k", "v22")),
        Ok(OpResult::Written(Stat {
            kind: NodeKind::Blob,
            version: 2,
            create_revision: 1,
            modify_revision: 2,
            children: 0,
            size: 3,
        }))
    );
    // A transaction changing two nodes is one revision.
    let (succeeded, results) = tree
        .apply(&Txn {
            guards: vec![Guard::VersionEquals {
                path: p("/k"),
                version: 2,
            }],
            then: vec![blob("/k", "v3"), blob("/j", "w")],
            otherwise: vec![],
        })
        .unwrap();
    assert!(succeeded);
    assert_eq!(tree.revision(), 3);
    assert!(matches!(
        results[0],
        OpResult::Written(Stat {
            version: 3,
            modify_revision: 3,
            ..
        })
    ));
    assert!(matches!(
        results[1],
        OpResult::Written(Stat {
            version: 1,
            create_revision: 3,
            ..
        })
    ));
    // A failed guard runs the other branch; a branch that changes nothing (a read)
    // is no revision.
    let (succeeded, results) = tree
        .apply(&Txn {
            guards: vec![Guard::Missing { path: p("/k") }],
            then: vec![blob("/k", "never")],
            otherwise: vec![Op::Read(ReadOp::Get { path: p("/k") })],
        })
        .unwrap();
    assert!(!succeeded);
    assert_eq!(tree.revision(), 3);
    assert_eq!(
        results,
        [OpResult::Read(ReadResult::Node {
            value: NodeValue::Blob(Bytes::from("v3")),
            stat: Stat {
                kind: NodeKind::Blob,
                version: 3,
                create_revision: 1,
                modify_revision: 3,
                children: 0,
                size: 2,
            }
        })]
    );
}

// Proves reads at a past revision see that revision's tree, lists included: a child
// deleted right after the revision is listed, one created after it is not, and a
// page cursor naming a child with history is honoured.
#[test]
fn past_revisions_are_read_as_they_were() {
    let mut tree = Tree::new(Limits::default());
    write(&mut tree, dir("/d")).unwrap(); // 1
    write(&mut tree, blob("/d/x", "1")).unwrap(); // 2
    write(&mut tree, blob("/d/y", "1")).unwrap(); // 3
    write(&mut tree, blob("/d/x", "2")).unwrap(); // 4
    write(
        &mut tree,
        Op::Delete {
            path: p("/d/x"),
            recursive: false,
        },
    )
    .unwrap(); // 5
    write(&mut tree, blob("/d/z", "1")).unwrap(); // 6
    assert_eq!(list(&tree, "/d", None, None), ["y", "z"]);
    assert_eq!(list(&tree, "/d", Some(5), None), ["y"]);
    assert_eq!(list(&tree, "/d", Some(4), None), ["x", "y"]);
    assert_eq!(list(&tree, "/d", Some(4), Some("x")), ["y"]);
    assert_eq!(list(&tree, "/d", Some(2), None), ["x"]);
    assert_eq!(list(&tree, "/d", Some(1), None), Vec::<String>::new());
    assert_eq!(list(&tree, "/", Some(0), None), Vec::<String>::new());
    let get = |revision| {
        tree.query(&Query {
            revision: Some(revision),
            ops: vec![ReadOp::Get { path: p("/d/x") }],
        })
    };
    assert!(matches!(
        &get(3).unwrap().results[0],
        ReadResult::Node { value: NodeValue::Blob(value), stat } if value == "1" && stat.version == 1
    ));
    assert!(matches!(
        &get(4).unwrap().results[0],
        ReadResult::Node { value: NodeValue::Blob(value), stat } if value == "2" && stat.version == 2
    ));
    assert_eq!(
        get(5),
        Err(ServiceError::NotFound {
            path: "/d/x".into()
        })
    );
    assert_eq!(
        get(7),
        Err(ServiceError::FutureRevision {
            requested: 7,
            current: 6
        })
    );
}

// Proves history is kept for `history_revisions_max` revisions and older reads are
// refused by name.
#[test]
fn reads_older_than_the_history_kept_are_compacted() {
    let mut tree = Tree::new(Limits {
        history_revisions_max: 2,
        ..Limits::default()
    });
    for value in ["1", "2", "3", "4"] {
        write(&mut tree, blob("/k", value)).unwrap();
    }
    assert_eq!(tree.oldest_revision(), 2);
    let at = |revision| Query {
        revision: Some(revision),
        ops: vec![ReadOp::Stat { path: p("/k") }],
    };
    assert!(tree.query(&at(2)).is_ok());
    let error = tree.query(&at(1)).unwrap_err();
    assert_eq!(
        error,
        ServiceError::Compacted {
            requested: 1,
            oldest: 2
        }
    );
    assert!(
        error.to_string().contains("history_revisions_max"),
        "{error}"
    );
}

// Proves a transaction whose later operation fails leaves nothing of its earlier
// ones, says which operation failed, and uses no revision.
#[test]
fn a_failing_operation_undoes_the_whole_transaction() {
    let mut tree = Tree::new(Limits::default());
    write(&mut tree, blob("/k", "before")).unwrap();
    let snapshot = tree.clone();
    let error = tree
        .apply(&Txn {
            guards: vec![],
            then: vec![
                blob("/k", "after"),
                Op::Create {
                    path: p("/new/deep"),
                    value: NodeValue::Counter(1),
                    parents: true,
                },
                Op::CounterAdd {
                    path: p("/k"),
                    delta: 1,
                },
            ],
            otherwise: vec![],
        })
        .unwrap_err();
    assert_eq!(
        error,
        ServiceError::InTransaction {
            op: 2,
            error: Box::new(ServiceError::WrongType {
                path: "/k".into(),
                expected: NodeKind::Counter,
                actual: NodeKind::Blob,
            })
        }
    );
    assert_eq!(
        error.to_string(),
        "operation 2 of the transaction: /k: is a blob, the operation needs a counter"
    );
    assert_eq!(tree, snapshot);
}

// Proves the quota refuses writes that grow the namespace past it, naming it, while
// deletes and shrinking writes still apply.
#[test]
fn past_the_quota_only_shrinking_writes_apply() {
    let mut tree = Tree::new(Limits {
        namespace_bytes_max: 400,
        ..Limits::default()
    });
    write(&mut tree, blob("/a", &"x".repeat(150))).unwrap();
    let error = write(&mut tree, blob("/b", &"x".repeat(150))).unwrap_err();
    assert!(
        matches!(error, ServiceError::QuotaExceeded { max: 400, would_be } if would_be > 400),
        "{error:?}"
    );
    assert!(error.to_string().contains("namespace_bytes_max"), "{error}");
    assert!(tree.get(&p("/b")).is_none());
    write(&mut tree, blob("/a", "small")).unwrap();
    write(
        &mut tree,
        Op::Delete {
            path: p("/a"),
            recursive: false,
        },
    )
    .unwrap();
    write(&mut tree, blob("/b", &"x".repeat(150))).unwrap();
}

// Proves each kind of bad request gets an error that says what was wrong and what
// is allowed, and changes nothing.
#[test]
fn bad_requests_are_told_what_is_wrong() {
    let mut tree = Tree::new(Limits {
        value_bytes_max: 4,
        children_per_dir_max: 1,
        txn_ops_max: 2,
        ..Limits::default()
    });
    write(&mut tree, blob("/b", "v")).unwrap();
    let before = tree.clone();
    let cases: Vec<(Op, &str)> = vec![
        (
            blob("/b", "12345"),
            "value_bytes_max exceeded: 5 is over the limit of 4",
        ),
        (
            blob("/c", "v"),
            "children_per_dir_max exceeded: 2 is over the limit of 1",
        ),
        (blob("/b/c", "v"), "/b: is a blob; only a dir has children"),
        (dir("/x/y"), "/x: no such node"),
        (
            Op::SetInsert {
                path: p("/b"),
                members: vec![],
            },
            "/b: is a blob, the operation needs a set",
        ),
        (
            Op::Delete {
                path: Path::root(),
                recursive: true,
            },
            "/: the root dir cannot be created or deleted",
        ),
        (
            Op::Create {
                path: p("/b"),
                value: NodeValue::Dir,
                parents: true,
            },
            "/b: a node exists there already",
        ),
    ];
    for (op, message) in cases {
        let error = write(&mut tree, op.clone()).unwrap_err();
        assert_eq!(error.to_string(), message, "{op:?}");
        assert_eq!(tree, before, "{op:?}");
    }
    let three = Txn {
        guards: vec![Guard::Exists { path: p("/b") }],
        then: vec![blob("/b", "1"), blob("/b", "2")],
        otherwise: vec![],
    };
    assert_eq!(
        tree.apply(&three).unwrap_err(),
        ServiceError::LimitExceeded {
            limit: Limit::TxnOps,
            max: 2,
            actual: 3
        }
    );
    assert_eq!(
        Path::parse("b/c", 100).unwrap_err().to_string(),
        "invalid path \"b/c\": a path is absolute: it starts with '/'"
    );
}

// Proves a recursive delete removes a whole subtree (and only it), with its count,
// and that a list pages through children in name order.
#[test]
fn subtrees_delete_whole_and_lists_page_by_name() {
    let mut tree = Tree::new(Limits::default());
    for path in ["/a/b/c", "/a/b/d", "/a/e", "/ab", "/a0"] {
        write(
            &mut tree,
            Op::Create {
                path: p(path),
                value: NodeValue::Counter(0),
                parents: true,
            },
        )
        .unwrap();
    }
    let page = |after: Option<&str>| {
        tree.query(&Query {
            revision: None,
            ops: vec![ReadOp::List {
                path: Path::root(),
                after: after.map(String::from),
                limit: 2,
            }],
        })
        .unwrap()
    };
    let entry = |name: &str, kind| ChildEntry {
        name: name.into(),
        kind,
    };
    assert_eq!(
        page(None),
        QueryResponse {
            revision: 5,
            results: vec![ReadResult::List {
                children: vec![entry("a", NodeKind::Dir), entry("a0", NodeKind::Counter)],
                more: true
            }]
        }
    );
    assert_eq!(
        page(Some("a0")).results,
        [ReadResult::List {
            children: vec![entry("ab", NodeKind::Counter)],
            more: false
        }]
    );
    assert_eq!(
        write(
            &mut tree,
            Op::Delete {
                path: p("/a"),
                recursive: false
            }
        ),
        Err(ServiceError::NotEmpty {
            path: "/a".into(),
            children: 2
        })
    );
    assert_eq!(
        write(
            &mut tree,
            Op::Delete {
                path: p("/a"),
                recursive: true
            }
        ),
        Ok(OpResult::Deleted { nodes: 5 })
    );
    let left: Vec<String> = tree.nodes().map(|(path, _)| path.to_string()).collect();
    assert_eq!(left, ["/", "/a0", "/ab"]);
    tree.check_invariants();
}
