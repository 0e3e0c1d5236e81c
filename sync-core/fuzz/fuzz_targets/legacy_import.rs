//! Any text as a `localStorage` dump: parsing never panics, applying the result to fresh
//! documents never panics, and a second apply writes nothing (the import is idempotent).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sync_core::docs::{DocSpec, commit, create};
use sync_core::import;

const NOW: i64 = 1_750_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(dump) = import::parse(text) else {
        return;
    };
    let user = dump.for_user(None);
    let mut prefs = create(&DocSpec::Preferences, [1; 16]).unwrap();
    let mut learning = create(&DocSpec::Learning, [1; 16]).unwrap();
    let mut courses: Vec<_> = user
        .course_ids()
        .into_iter()
        .map(|id| {
            let doc = create(&DocSpec::Course { course_id: id.clone() }, [1; 16]).unwrap();
            (id, doc)
        })
        .collect();
    let mut apply = |prefs: &mut _, learning: &mut _, courses: &mut Vec<(String, _)>| {
        user.apply_preferences(prefs, NOW).unwrap();
        user.apply_learning(learning, NOW).unwrap();
        for (id, doc) in courses.iter_mut() {
            user.apply_course(id, doc, NOW).unwrap();
        }
    };
    apply(&mut prefs, &mut learning, &mut courses);
    commit(&mut prefs, NOW);
    commit(&mut learning, NOW);
    let heads = (prefs.get_heads(), learning.get_heads());
    apply(&mut prefs, &mut learning, &mut courses);
    commit(&mut prefs, NOW);
    commit(&mut learning, NOW);
    assert_eq!((prefs.get_heads(), learning.get_heads()), heads, "a second import wrote");
});
