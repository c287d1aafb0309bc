use super::parse_stats;

const LOG: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb
#4096\tpulse  cov: 20 ft: 30 corp: 5/64b lim: 4 exec/s: 2048 rss: 31Mb
#244943\tDONE   cov: 812 ft: 2903 corp: 410/19Kb lim: 4096 exec/s: 22267 rss: 32Mb
Done 244943 runs in 11 second(s)
stat::number_of_executed_units: 244943
stat::average_exec_per_sec:     22267
stat::new_units_added:          2952
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              32
";

#[test]
fn stats_come_from_the_final_report() {
    let stats = parse_stats(LOG);
    assert_eq!(stats.execs, 244_943);
    assert_eq!(stats.execs_per_sec, 22_267);
    assert_eq!(stats.new_units, 2952);
    assert_eq!(stats.coverage, "cov 812, ft 2903, corpus 410/19Kb");
    assert_eq!(stats.seed, "1234");
}

#[test]
fn a_run_without_a_report_has_no_execs() {
    let stats = parse_stats("INFO: Seed: 1\n==1== ERROR: libFuzzer: deadly signal\n");
    assert_eq!(stats.execs, 0);
    assert_eq!(stats.coverage, "no coverage reported");
}
