#!/usr/bin/perl
# Checks the documentation against the repository (scripts/test.d/06-docs):
#
#   perl scripts/lib/docs-check.pl BIN_DIR FILE.md...
#
# run from the repository's root, BIN_DIR holding the built programs.
# Nothing is executed but `<program> --help`. It checks that
#   - every relative link ([text](path#anchor), <img src>, <a href>) names a
#     file or directory of the repository, and its #anchor a heading of that
#     page (GitHub's anchors: lower case, punctuation dropped, spaces to -);
#   - every path of the repository quoted in code (`scripts/...`,
#     `crates/...`, `deploy/...`, `mosquitto/...`, `web/...`, `docs/...`,
#     `vendor/...`) exists, unless git ignores it (made by a script);
#   - in each command of a ```sh block or a `code span` (a pipeline is split
#     at | && || ;):
#       * one of our programs (led-client, target/release/controller,
#         /usr/bin/pump-sim, ...): each --flag and -f after it is in its --help;
#       * mosquitto_pub/mosquitto_sub: likewise, against their --help;
#       * scripts/..., deploy/install, .ci/run: the script exists and is
#         executable, and each --flag after it appears in its source;
#       * cargo: each -p/--package is a package of the workspace, each --bin
#         one of its binaries, each --test one of its test targets;
#       * cd DIR, DIR in the repository: the directory exists.
# Prints one line per problem, "FILE:LINE: what", and exits 1 if any.
use strict;
use warnings;
use utf8;
use File::Basename qw(dirname);
use File::Spec;
use Cwd qw(abs_path);

binmode STDOUT, ':encoding(UTF-8)';
binmode STDERR, ':encoding(UTF-8)';

my ($bin_dir, @files) = @ARGV;
die "usage: docs-check.pl BIN_DIR FILE.md...\n" unless defined $bin_dir && @files;
my $root = abs_path('.');
my @problems;
sub problem { my ($file, $line, $what) = @_; push @problems, "$file:$line: $what"; }

# ------------------------------------------------------------------ workspace
# Packages (crates/<dir>/Cargo.toml), their binaries and test targets.
my (%package, %binary_of, %tests_of);
for my $manifest (glob 'crates/*/Cargo.toml') {
  my $dir = dirname($manifest);
  open my $fh, '<:encoding(UTF-8)', $manifest or die "$manifest: $!";
  my $text = do { local $/; <$fh> };
  my ($name) = $text =~ /^\[package\][^\[]*?^name\s*=\s*"([^"]+)"/ms or next;
  $package{$name} = $dir;
  $binary_of{$name}{$name} = 1 if -f "$dir/src/main.rs";
  for (glob "$dir/src/bin/*.rs") { m{([^/]+)\.rs$} and $binary_of{$name}{$1} = 1; }
  while ($text =~ /^\[\[bin\]\][^\[]*?^name\s*=\s*"([^"]+)"/msg) { $binary_of{$name}{$1} = 1; }
  for (glob "$dir/tests/*.rs") { m{([^/]+)\.rs$} and $tests_of{$name}{$1} = 1; }
  while ($text =~ /^\[\[test\]\][^\[]*?^name\s*=\s*"([^"]+)"/msg) { $tests_of{$name}{$1} = 1; }
}
my %our_program;    # binary name => 1
for my $p (keys %binary_of) { $our_program{$_} = 1 for keys %{ $binary_of{$p} }; }
die "docs-check: no workspace packages under crates/ (run from the repository's root)\n" unless %package;

my %help;           # program => its --help text ('' when it cannot be run)
sub help_of {
  my ($program) = @_;
  return $help{$program} if exists $help{$program};
  my $path = $our_program{$program} ? "$bin_dir/$program" : $program;
  my $text = '';
  if ($our_program{$program} ? -x $path : system("command -v $program >/dev/null 2>&1") == 0) {
    $text = `'$path' --help 2>&1`;
    utf8::decode($text);
  }
  return $help{$program} = $text;
}

my %source;         # script => its text
sub source_of {
  my ($script) = @_;
  return $source{$script} //= do {
    open my $fh, '<:encoding(UTF-8)', $script or die "$script: $!";
    local $/;
    <$fh>;
  };
}

sub ignored_by_git { system('git', 'check-ignore', '-q', '--no-index', $_[0]) == 0 }

# ------------------------------------------------------------------ markdown
# GitHub's anchor for a heading: the text as shown, lower case, every
# character but letters, digits, _, - and spaces dropped, spaces to -.
sub slug {
  my ($text) = @_;
  $text =~ s/!?\[([^\]]*)\]\([^)]*\)/$1/g;    # links and images: their text
  $text =~ s/<[^>]+>//g;                       # html tags
  $text =~ s/[`*]//g;                          # code and emphasis marks
  $text = lc $text;
  $text =~ s/[^\w\- ]//g;
  $text =~ s/ /-/g;
  return $text;
}

my %anchors_cache;
sub anchors_of {
  my ($file) = @_;
  return $anchors_cache{$file} if $anchors_cache{$file};
  my %anchors;
  my %seen;
  my $fence = 0;
  open my $fh, '<:encoding(UTF-8)', $file or die "$file: $!";
  while (my $line = <$fh>) {
    if ($line =~ /^\s*```/) { $fence = !$fence; next; }
    next if $fence;
    if ($line =~ /^#{1,6}\s+(.*?)\s*#*\s*$/) {
      my $s = slug($1);
      my $n = $seen{$s}++;
      $anchors{ $n ? "$s-$n" : $s } = 1;
    }
    $anchors{$1} = 1 while $line =~ /<a\s+(?:id|name)="([^"]+)"/g;
  }
  return $anchors_cache{$file} = \%anchors;
}

sub check_link {
  my ($file, $line, $target) = @_;
  return if $target =~ m{^[a-zA-Z][a-zA-Z0-9+.-]*:};    # http:, https:, mailto:
  my ($path, $anchor) = $target =~ /^([^#]*)(?:#(.*))?$/;
  my $resolved = $file;
  if ($path ne '') {
    $path =~ s/%20/ /g;
    $resolved = File::Spec->abs2rel(File::Spec->rel2abs($path, dirname(File::Spec->rel2abs($file))), $root);
    1 while $resolved =~ s{(^|/)(?!\.\./)[^/]+/\.\.(/|$)}{$1};    # a/../b => b
    if ($resolved =~ m{^\.\.(/|$)}) { problem($file, $line, "link $target leaves the repository"); return; }
    unless (-e $resolved) { problem($file, $line, "link $target: no such file ($resolved)"); return; }
  }
  return unless defined $anchor && $anchor ne '';
  return unless $resolved =~ /\.md$/ && -f $resolved;
  problem($file, $line, "link $target: no heading with anchor #$anchor in $resolved")
    unless anchors_of($resolved)->{$anchor};
}

# A repository path quoted in code: it must exist (or be made by a script,
# which git ignores). Globs must match something; placeholders are skipped.
sub check_path {
  my ($file, $line, $word) = @_;
  $word =~ s/^[(\["']+//;
  $word =~ s/[)\]"',.;:]+$//;
  $word =~ s/'s$//;                       # scripts/cluster's
  return unless $word =~ m{^(?:\./)?(?:scripts|crates|deploy|mosquitto|web|docs|vendor|\.ci)/};
  return if $word =~ /[<>{}…\$\@|=]/ || $word =~ /\.\.\./;
  if ($word =~ /[*?]/) {
    problem($file, $line, "$word matches no file") unless glob($word);
    return;
  }
  return if -e $word || ignored_by_git($word);
  problem($file, $line, "$word: no such file or directory");
}

# ------------------------------------------------------------------ commands
# Splits a command line as the shell would, roughly: words (quotes removed),
# and the operators | || && ; & as words of their own. A # that starts a word
# starts a comment. Redirections (>file, 2>&1, < file) are dropped.
sub shell_words {
  my ($text) = @_;
  my @words;
  my ($word, $in_word) = ('', 0);
  my $i = 0;
  my $n = length $text;
  my $flush = sub { push @words, $word if $in_word; ($word, $in_word) = ('', 0); };
  while ($i < $n) {
    my $c = substr($text, $i, 1);
    if ($c =~ /\s/) { $flush->(); $i++; next; }
    if ($c eq '#' && !$in_word) { last; }
    if ($c eq "'") {
      my $end = index($text, "'", $i + 1);
      $end = $n if $end < 0;
      $word .= substr($text, $i + 1, $end - $i - 1);
      $in_word = 1; $i = $end + 1; next;
    }
    if ($c eq '"') {
      my $j = $i + 1;
      while ($j < $n && substr($text, $j, 1) ne '"') { $j += substr($text, $j, 1) eq '\\' ? 2 : 1; }
      $word .= substr($text, $i + 1, $j - $i - 1);
      $in_word = 1; $i = $j + 1; next;
    }
    if ($c eq '\\') { $word .= substr($text, $i + 1, 1); $in_word = 1; $i += 2; next; }
    if (substr($text, $i) =~ /^(\|\||&&|\||;|&(?!>))/) {
      $flush->(); push @words, "\0$1"; $i += length $1; next;
    }
    if ($c eq '>' || $c eq '<') {
      # a redirection (2>&1, >file, < file): dropped, with its target
      if ($word =~ /^[0-9]+$/) { ($word, $in_word) = ('', 0); } else { $flush->(); }
      $i++ while $i < $n && substr($text, $i, 1) =~ /[<>&]/;
      $i++ while $i < $n && substr($text, $i, 1) =~ /\s/;
      $i++ while $i < $n && substr($text, $i, 1) !~ /[\s|;&]/;
      next;
    }
    $word .= $c; $in_word = 1; $i++;
  }
  $flush->();
  return @words;
}

# Is WORD (one of the help's or the script's options) in TEXT?
sub mentions {
  my ($text, $flag) = @_;
  return $text =~ /(?<![\w-])\Q$flag\E(?![\w-])/;
}

sub check_flags {
  my ($file, $line, $program, $text, $what, @args) = @_;
  for my $arg (@args) {
    last if $arg eq '--';
    my $flag = $arg;
    $flag =~ s/^\[//;                        # [--port 1883] in a usage line
    $flag =~ s/[\[=].*$//s;                  # --flag=value, --flag[=X]
    $flag =~ s/\]+$//;
    next unless $flag =~ /^--[a-zA-Z][\w-]*$/ || $flag =~ /^-[a-zA-Z]$/;
    problem($file, $line, "$program $flag: not in $what") unless mentions($text, $flag);
  }
}

sub check_cargo {
  my ($file, $line, @args) = @_;
  my (@packages, @bins, @tests);
  for (my $i = 0; $i < @args; $i++) {
    my $a = $args[$i];
    last if $a eq '--';
    if    ($a =~ /^(?:-p|--package)$/ && defined $args[$i + 1]) { push @packages, $args[++$i]; }
    elsif ($a =~ /^(?:-p|--package=)(.+)$/)                      { push @packages, $1; }
    elsif ($a eq '--bin' && defined $args[$i + 1])                { push @bins, $args[++$i]; }
    elsif ($a =~ /^--bin=(.+)$/)                                  { push @bins, $1; }
    elsif ($a eq '--test' && defined $args[$i + 1])               { push @tests, $args[++$i]; }
    elsif ($a =~ /^--test=(.+)$/)                                 { push @tests, $1; }
  }
  my @in = @packages;
  for my $p (@packages) {
    problem($file, $line, "cargo -p $p: no such package in the workspace") unless $package{$p};
  }
  @in = keys %package unless @in;
  for my $b (@bins) {
    problem($file, $line, "cargo --bin $b: no such binary") unless grep { $binary_of{$_} && $binary_of{$_}{$b} } @in;
  }
  for my $t (@tests) {
    next if $t =~ /[*?]/;
    problem($file, $line, "cargo --test $t: no such test target") unless grep { $tests_of{$_} && $tests_of{$_}{$t} } @in;
  }
}

# TEXT is a line of a ```sh block (IN_BLOCK) or a code span.
sub check_command {
  my ($file, $line, $text, $in_block) = @_;
  my @words = shell_words($text);
  check_path($file, $line, $_) for grep { !/^\0/ } @words;
  my @command;
  for my $w (@words, "\0;") {
    if ($w !~ /^\0/) { push @command, $w; next; }
    my @c = @command;
    @command = ();
    shift @c while @c && ($c[0] =~ /^(?:sudo|env|exec|time|nice|\(|\{|then|do|!)$/ || $c[0] =~ /^[A-Za-z_][A-Za-z0-9_]*=/);
    next unless @c;
    my ($program, @args) = @c;
    my $name = $program =~ m{([^/]+)$} ? $1 : $program;
    if ($program =~ m{^(?:\./)?target/(?:release|debug)/([^/\s]+)$} && !$our_program{$1}) {
      problem($file, $line, "$program: no such program in the workspace");
    } elsif ($our_program{$name} && ($program eq $name || $program =~ m{^(?:\./)?target/(?:release|debug)/|^/usr/(?:local/)?bin/})) {
      my $help = help_of($name);
      if ($help eq '') { problem($file, $line, "$name: $bin_dir/$name --help printed nothing (is it built?)"); next; }
      check_flags($file, $line, $name, $help, "$name --help", @args);
    } elsif ($name =~ /^mosquitto_(?:pub|sub)$/ && $program eq $name) {
      my $help = help_of($name);
      check_flags($file, $line, $name, $help, "$name --help", @args) if $help ne '';
    } elsif ($program =~ m{^(?:\./)?(?:scripts|deploy|\.ci)/}) {
      (my $script = $program) =~ s{^\./}{};
      next if $script =~ /[<>{}…*\$]/ || -d $script;
      # A file named in prose (`scripts/lib/common.sh`) is not run: check_path did it.
      next unless $in_block || @args;
      next unless -f $script;    # (check_path said so)
      if (!-x $script) { problem($file, $line, "$script: not executable"); next; }
      check_flags($file, $line, $script, source_of($script), "the source of $script", @args);
    } elsif ($program eq 'cargo') {
      check_cargo($file, $line, @args);
    } elsif ($program eq 'cd' && @args && $args[0] =~ m{^(?:scripts|crates|deploy|mosquitto|web|docs|vendor)(?:/|$)}) {
      problem($file, $line, "cd $args[0]: no such directory") unless -d $args[0];
    }
  }
}

# ------------------------------------------------------------------ each file
for my $file (@files) {
  open my $fh, '<:encoding(UTF-8)', $file or die "$file: $!";
  my @lines = <$fh>;
  close $fh;
  my ($fence, $lang, $prose) = (0, '', '');
  my @prose_line;    # offset in $prose => line number
  my $continued = '';
  my $continued_at = 0;
  for my $n (1 .. @lines) {
    my $line = $lines[$n - 1];
    if ($line =~ /^\s*```\s*(\S*)/) {
      ($fence, $lang) = $fence ? (0, '') : (1, $1);
      $prose .= "\n";
      next;
    }
    if ($fence) {
      chomp(my $code = $line);
      if ($lang =~ /^(?:sh|bash|shell|console)$/) {
        $continued_at = $n if $continued eq '';
        if ($code =~ s/\\$//) { $continued .= "$code "; next; }
        check_command($file, $continued_at, $continued . $code, 1);
        $continued = '';
      } else {
        check_path($file, $n, $_) for split ' ', $code;
      }
      $prose .= "\n";
      next;
    }
    push @prose_line, [length $prose, $n];
    $prose .= $line;
  }
  problem($file, scalar @lines, "a ``` block is not closed") if $fence;
  my $line_at = sub {
    my ($offset) = @_;
    my $n = 1;
    for (@prose_line) { last if $_->[0] > $offset; $n = $_->[1]; }
    return $n;
  };
  # Code spans: commands and paths; then links, outside code spans.
  my $outside = $prose;
  while ($prose =~ /(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)/gs) {
    my ($span, $start, $length) = ($2, $-[0], $+[0] - $-[0]);
    $span =~ s/\s*\n\s*/ /g;
    $span =~ s/\\\|/|/g;    # a | inside a table cell
    check_command($file, $line_at->($start), $span, 0);
    substr($outside, $start, $length) = ' ' x $length;
  }
  while ($outside =~ /!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^()\s>]+)>?(?:\s+"[^"]*")?\s*\)/g) {
    my ($at, $target) = ($-[0], $2);
    check_link($file, $line_at->($at), $target);
  }
  while ($outside =~ /^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)/mg) {
    my ($at, $target) = ($-[0], $1);
    check_link($file, $line_at->($at), $target);
  }
  while ($outside =~ /<(?:img|a|source)\b[^>]*?\b(?:src|href)="([^"]+)"/g) {
    my ($at, $target) = ($-[0], $1);
    check_link($file, $line_at->($at), $target);
  }
}

if (@problems) {
  my %seen;
  my @sorted = map { $_->[2] } sort { $a->[0] cmp $b->[0] || $a->[1] <=> $b->[1] }
    map { /^(.*?):(\d+):/; [$1, $2, $_] } grep { !$seen{$_}++ } @problems;
  print STDERR "$_\n" for @sorted;
  exit 1;
}
