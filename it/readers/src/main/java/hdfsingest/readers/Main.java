package hdfsingest.readers;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.FileDescriptor;
import java.io.FileNotFoundException;
import java.io.FileOutputStream;
import java.io.BufferedOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.CRC32;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileStatus;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.FsShell;
import org.apache.hadoop.fs.LocatedFileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RemoteIterator;
import org.apache.hadoop.io.BytesWritable;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.util.ToolRunner;
import org.apache.parquet.example.data.Group;
import org.apache.parquet.example.data.simple.SimpleGroupFactory;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.ParquetReader;
import org.apache.parquet.hadoop.ParquetWriter;
import org.apache.parquet.hadoop.example.ExampleParquetWriter;
import org.apache.parquet.hadoop.example.GroupReadSupport;
import org.apache.parquet.hadoop.util.HadoopInputFile;
import org.apache.parquet.hadoop.util.HadoopOutputFile;
import org.apache.parquet.schema.LogicalTypeAnnotation;
import org.apache.parquet.schema.MessageType;
import org.apache.parquet.schema.MessageTypeParser;
import org.apache.parquet.schema.PrimitiveType;
import org.apache.parquet.schema.PrimitiveType.PrimitiveTypeName;
import org.apache.parquet.schema.Type;

/**
 * hdfs-ingest's reader tool: reads the packed output layouts back with code the project did not
 * write, so that the project's writers are checked against the readers the data is for.
 *
 * <p>Usage: {@code Main MODE ARG...}. Paths are {@code hdfs://host:port/...} URLs (the FileSystem is
 * configured from the URL) or local paths; a directory stands for every file under it, at any depth,
 * whose name ends in the mode's suffix ({@code .seq} or {@code .parquet}), in path order; a directory
 * without any is an error. Below a directory, files and directories whose names start with {@code _}
 * or {@code .} are skipped, as Hadoop's input formats skip them (staging {@code _temporary}); a file
 * named as an argument is always read.
 *
 * <ul>
 *   <li>{@code seq PATH...}: Hadoop's {@code SequenceFile.Reader}, key {@code Text}, value
 *       {@code BytesWritable}. One line per record: {@code file name length crc32}.
 *   <li>{@code seq-meta PATH...}: one line per SequenceFile: {@code file compression syncs metadata},
 *       compression {@code none}, {@code record} or {@code block}, syncs the sync markers the reader
 *       passed, metadata {@code key=value} pairs joined by {@code ;} ({@code -} when empty).
 *   <li>{@code text PATH...}: what {@code hadoop fs -text} runs (FsShell's {@code -text}, in this
 *       process), its output lines {@code key<TAB>value as hex} parsed back. Same lines as {@code seq}.
 *   <li>{@code parquet PATH...}: parquet-mr's {@code ParquetReader} with {@code GroupReadSupport},
 *       after checking the file's schema is the image schema. One line per row: {@code file name
 *       length crc32 source seq batch_ms format width height crc32col} (nulls as {@code -}).
 *   <li>{@code write-seq PATH N}: writes N records with Hadoop's {@code SequenceFile.Writer}
 *       (uncompressed): key {@code img-<i>.bin}, value i bytes of value {@code i % 251}.
 *   <li>{@code write-parquet PATH N}: writes N rows of the image schema with parquet-mr's example
 *       writer: the same names and bytes, source {@code src-<i % 3>}, seq i, batch_ms
 *       {@code 1700000000000 + i}, format {@code bin}, width i and height {@code 2 i} (both null for
 *       odd i), crc32 the CRC-32 of the bytes.
 * </ul>
 *
 * <p>Output: stdout carries only the lines above, tab-separated, {@code length} in bytes, {@code crc32}
 * the IEEE CRC-32 of the value bytes as 8 lowercase hex digits, {@code file} the URL for HDFS and the
 * absolute path for local files. Text fields escape {@code \\}, tab, newline and carriage return as
 * {@code \\\\}, {@code \\t}, {@code \\n}, {@code \\r}. Hadoop's logs go to stderr. On failure: a line
 * {@code ERROR <file>: <reason>} on stderr and exit status 1 (2 for a usage error).
 */
public final class Main {

    /** A failure reading or writing one file: reported as {@code ERROR <file>: <reason>}. */
    static final class FileFailure extends Exception {
        final String file;

        FileFailure(String file, String reason) {
            super(reason);
            this.file = file;
        }
    }

    private final Configuration conf = new Configuration();
    private final PrintStream out;

    private Main(PrintStream out) {
        this.out = out;
    }

    public static void main(String[] args) {
        // Keep stdout for the records; anything else that writes to System.out goes to stderr.
        PrintStream records = new PrintStream(
            new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16), false,
            StandardCharsets.UTF_8);
        System.setOut(System.err);
        if (args.length < 2) {
            usage("need a mode and at least one path");
        }
        Main main = new Main(records);
        String mode = args[0];
        List<String> rest = List.of(args).subList(1, args.length);
        int status = 0;
        try {
            switch (mode) {
                case "seq" -> {
                    for (Path p : main.expand(rest, ".seq")) {
                        main.readSeq(p);
                    }
                }
                case "seq-meta" -> {
                    for (Path p : main.expand(rest, ".seq")) {
                        main.seqMeta(p);
                    }
                }
                case "text" -> {
                    for (Path p : main.expand(rest, ".seq")) {
                        main.fsText(p);
                    }
                }
                case "parquet" -> {
                    for (Path p : main.expand(rest, ".parquet")) {
                        main.readParquet(p);
                    }
                }
                case "write-seq" -> main.writeSeq(writeArgs(rest));
                case "write-parquet" -> main.writeParquet(writeArgs(rest));
                default -> usage("unknown mode " + mode);
            }
        } catch (FileFailure e) {
            System.err.println("ERROR " + e.file + ": " + oneLine(e.getMessage()));
            status = 1;
        } catch (Throwable e) {
            e.printStackTrace();
            System.err.println("ERROR " + String.join(" ", rest) + ": " + describe(e));
            status = 1;
        }
        records.flush();
        if (records.checkError()) {
            System.err.println("ERROR stdout: writing the records failed");
            status = 1;
        }
        // Hadoop leaves non-daemon threads behind.
        System.exit(status);
    }

    // ---- paths -------------------------------------------------------------------------------

    /** A URL as it is; a local path made absolute. */
    private static Path toPath(String arg) {
        if (arg.contains("://")) {
            return new Path(arg);
        }
        return new Path(new File(arg).getAbsoluteFile().toURI());
    }

    /** How a file is named in the output: the URL, or the plain absolute path for local files. */
    private static String display(Path p) {
        if ("file".equals(p.toUri().getScheme())) {
            return p.toUri().getPath();
        }
        return p.toString();
    }

    /**
     * Whether a file below a directory is hidden from Hadoop's input formats: some path component
     * below the directory starts with {@code _} or {@code .} (staging {@code _temporary}, checksum
     * and in-progress files), as {@code FileInputFormat}'s hidden-file filter has it.
     */
    private static boolean hidden(String file, String dir) {
        String rel = file.startsWith(dir) ? file.substring(dir.length()) : file;
        for (String part : rel.split("/")) {
            if (part.startsWith("_") || part.startsWith(".")) {
                return true;
            }
        }
        return false;
    }

    /** Files as they are, directories replaced by their files ending in {@code suffix}, in path order. */
    private List<Path> expand(List<String> args, String suffix) throws FileFailure {
        List<Path> files = new ArrayList<>();
        for (String arg : args) {
            Path p = toPath(arg);
            try {
                FileSystem fs = p.getFileSystem(conf);
                FileStatus st = fs.getFileStatus(p);
                if (!st.isDirectory()) {
                    files.add(st.getPath());
                    continue;
                }
                List<Path> found = new ArrayList<>();
                RemoteIterator<LocatedFileStatus> it = fs.listFiles(p, true);
                String below = st.getPath().toUri().getPath();
                while (it.hasNext()) {
                    LocatedFileStatus f = it.next();
                    if (f.isFile() && f.getPath().getName().endsWith(suffix)
                        && !hidden(f.getPath().toUri().getPath(), below)) {
                        found.add(f.getPath());
                    }
                }
                if (found.isEmpty()) {
                    throw new FileFailure(arg, "a directory without any *" + suffix + " file");
                }
                found.sort(Comparator.comparing(Path::toString));
                files.addAll(found);
            } catch (FileNotFoundException e) {
                throw new FileFailure(arg, "no such file or directory");
            } catch (FileFailure e) {
                throw e;
            } catch (Exception e) {
                throw new FileFailure(arg, describe(e));
            }
        }
        return files;
    }

    // ---- SequenceFile ------------------------------------------------------------------------

    private SequenceFile.Reader openSeq(Path p) throws Exception {
        SequenceFile.Reader r = new SequenceFile.Reader(conf, SequenceFile.Reader.file(p));
        try {
            expectClass(p, "key", r.getKeyClassName(), Text.class);
            expectClass(p, "value", r.getValueClassName(), BytesWritable.class);
        } catch (FileFailure e) {
            r.close();
            throw e;
        }
        return r;
    }

    private static void expectClass(Path p, String what, String actual, Class<?> expected)
        throws FileFailure {
        if (!expected.getName().equals(actual)) {
            throw new FileFailure(display(p),
                "the " + what + " class is " + actual + ", not " + expected.getName());
        }
    }

    private void readSeq(Path p) throws FileFailure {
        String file = display(p);
        long records = 0;
        try (SequenceFile.Reader r = openSeq(p)) {
            Text key = new Text();
            BytesWritable value = new BytesWritable();
            while (r.next(key, value)) {
                records++;
                emit(file, key.toString(), crc(value.getBytes(), 0, value.getLength()),
                    value.getLength(), null);
            }
        } catch (FileFailure e) {
            throw e;
        } catch (Exception e) {
            throw new FileFailure(file, "SequenceFile.Reader failed after " + records + " record(s): "
                + describe(e));
        }
    }

    private void seqMeta(Path p) throws FileFailure {
        String file = display(p);
        try (SequenceFile.Reader r = openSeq(p)) {
            String compression = r.isBlockCompressed() ? "block" : r.isCompressed() ? "record" : "none";
            Map<String, String> meta = new TreeMap<>();
            for (Map.Entry<Text, Text> e : r.getMetadata().getMetadata().entrySet()) {
                meta.put(e.getKey().toString(), e.getValue().toString());
            }
            List<String> pairs = new ArrayList<>();
            meta.forEach((k, v) -> pairs.add(k + "=" + v));
            // syncSeen() tells whether the last next() passed a sync marker.
            long syncs = 0;
            Text key = new Text();
            BytesWritable value = new BytesWritable();
            while (r.next(key, value)) {
                if (r.syncSeen()) {
                    syncs++;
                }
            }
            out.println(file + "\t" + compression + "\t" + syncs + "\t"
                + (pairs.isEmpty() ? "-" : escape(String.join(";", pairs))));
        } catch (FileFailure e) {
            throw e;
        } catch (Exception e) {
            throw new FileFailure(file, "SequenceFile.Reader failed: " + describe(e));
        }
    }

    private void writeSeq(WriteArgs w) throws FileFailure {
        String file = display(w.path);
        try {
            SequenceFile.Metadata meta = new SequenceFile.Metadata();
            meta.set(new Text("written-by"), new Text("hadoop SequenceFile.Writer"));
            try (SequenceFile.Writer writer = SequenceFile.createWriter(conf,
                SequenceFile.Writer.file(w.path),
                SequenceFile.Writer.keyClass(Text.class),
                SequenceFile.Writer.valueClass(BytesWritable.class),
                SequenceFile.Writer.compression(SequenceFile.CompressionType.NONE),
                SequenceFile.Writer.metadata(meta))) {
                for (int i = 0; i < w.n; i++) {
                    writer.append(new Text(sampleName(i)), new BytesWritable(sampleBytes(i)));
                }
            }
        } catch (Exception e) {
            throw new FileFailure(file, "SequenceFile.Writer failed: " + describe(e));
        }
    }

    // ---- hadoop fs -text ---------------------------------------------------------------------

    private void fsText(Path p) throws FileFailure {
        String file = display(p);
        TextLines lines = new TextLines(file);
        ByteArrayOutputStream errors = new ByteArrayOutputStream();
        PrintStream savedOut = System.out;
        PrintStream savedErr = System.err;
        int rc;
        // FsShell's commands print to System.out and System.err as they are when it creates them.
        PrintStream shellOut = new PrintStream(lines, false, StandardCharsets.UTF_8);
        System.setOut(shellOut);
        System.setErr(new PrintStream(errors, true, StandardCharsets.UTF_8));
        FsShell shell = new FsShell(conf);
        try {
            rc = ToolRunner.run(shell, new String[] {"-text", p.toString()});
            shell.close();
        } catch (Exception e) {
            System.setOut(savedOut);
            System.setErr(savedErr);
            throw new FileFailure(file, "hadoop fs -text threw " + describe(e));
        } finally {
            shellOut.flush();
            System.setOut(savedOut);
            System.setErr(savedErr);
        }
        if (rc != 0) {
            // FsShell prints the exception with its stack trace: keep the message lines.
            String msg = errors.toString(StandardCharsets.UTF_8).lines()
                .filter(l -> !l.stripLeading().startsWith("at ") && !l.isBlank())
                .collect(java.util.stream.Collectors.joining(" ")).trim();
            throw new FileFailure(file, "hadoop fs -text exited with " + rc
                + (msg.isEmpty() ? "" : ": " + msg));
        }
        lines.finish();
    }

    /**
     * Parses {@code hadoop fs -text} output as it is written: {@code key<TAB>hex bytes separated by
     * spaces<LF>}, BytesWritable's toString. The first malformed line is kept as the error.
     */
    private final class TextLines extends OutputStream {
        private final String file;
        private final ByteArrayOutputStream line = new ByteArrayOutputStream();
        private long lineNo = 0;
        private String error;

        TextLines(String file) {
            this.file = file;
        }

        @Override
        public void write(int b) {
            if (error != null) {
                return;
            }
            if (b == '\n') {
                lineNo++;
                parse(line.toString(StandardCharsets.UTF_8));
                line.reset();
            } else {
                line.write(b);
            }
        }

        @Override
        public void write(byte[] b, int off, int len) {
            for (int i = off; i < off + len; i++) {
                write(b[i]);
            }
        }

        private void parse(String l) {
            int tab = l.lastIndexOf('\t');
            if (tab < 0) {
                error = "hadoop fs -text line " + lineNo + " is not key<TAB>hex: " + preview(l);
                return;
            }
            String hex = l.substring(tab + 1);
            CRC32 crc = new CRC32();
            int length = 0;
            int i = 0;
            while (i < hex.length()) {
                if (i + 2 > hex.length()) {
                    error = "hadoop fs -text line " + lineNo + ": the value is not hex bytes: "
                        + preview(hex);
                    return;
                }
                int hi = Character.digit(hex.charAt(i), 16);
                int lo = Character.digit(hex.charAt(i + 1), 16);
                if (hi < 0 || lo < 0) {
                    error = "hadoop fs -text line " + lineNo + ": the value is not hex bytes: "
                        + preview(hex);
                    return;
                }
                crc.update((hi << 4) | lo);
                length++;
                i += 2;
                if (i < hex.length()) {
                    if (hex.charAt(i) != ' ') {
                        error = "hadoop fs -text line " + lineNo + ": the value is not hex bytes: "
                            + preview(hex);
                        return;
                    }
                    i++;
                    if (i == hex.length()) {
                        error = "hadoop fs -text line " + lineNo + ": the value ends in a space";
                        return;
                    }
                }
            }
            emit(file, l.substring(0, tab), crc.getValue(), length, null);
        }

        void finish() throws FileFailure {
            if (error == null && line.size() > 0) {
                error = "hadoop fs -text output ends in a line without a newline: "
                    + preview(line.toString(StandardCharsets.UTF_8));
            }
            if (error != null) {
                throw new FileFailure(file, error);
            }
        }
    }

    private static String preview(String s) {
        if (s.isEmpty()) {
            return "(an empty line)";
        }
        String p = s.length() > 80 ? s.substring(0, 80) + "..." : s;
        return escape(p);
    }

    // ---- Parquet -----------------------------------------------------------------------------

    /** The image schema of the packed Parquet layout (parquet-mr's schema language). */
    static final MessageType IMAGE_SCHEMA = MessageTypeParser.parseMessageType(
        "message image {\n"
            + "  required binary name (STRING);\n"
            + "  required binary source (STRING);\n"
            + "  required int64 seq;\n"
            + "  required int64 batch_ms;\n"
            + "  required binary format (STRING);\n"
            + "  optional int32 width;\n"
            + "  optional int32 height;\n"
            + "  required int64 crc32;\n"
            + "  required binary bytes;\n"
            + "}\n");

    /** Each column of the file must be one of the image schema, with its type and repetition. */
    private static void checkSchema(String file, MessageType schema) throws FileFailure {
        List<String> problems = new ArrayList<>();
        for (Type expected : IMAGE_SCHEMA.getFields()) {
            String name = expected.getName();
            if (!schema.containsField(name)) {
                problems.add("no column " + name);
                continue;
            }
            Type actual = schema.getType(name);
            if (!actual.isPrimitive()) {
                problems.add("column " + name + " is a group, not " + expected);
                continue;
            }
            PrimitiveType a = actual.asPrimitiveType();
            PrimitiveType e = expected.asPrimitiveType();
            if (a.getPrimitiveTypeName() != e.getPrimitiveTypeName()) {
                problems.add("column " + name + " is " + a.getPrimitiveTypeName() + ", not "
                    + e.getPrimitiveTypeName());
            }
            if (a.getRepetition() != e.getRepetition()) {
                problems.add("column " + name + " is " + a.getRepetition() + ", not "
                    + e.getRepetition());
            }
            if (!sameLogicalType(a, e)) {
                problems.add("column " + name + " is annotated " + a.getLogicalTypeAnnotation()
                    + ", not " + e.getLogicalTypeAnnotation());
            }
        }
        for (Type actual : schema.getFields()) {
            if (!IMAGE_SCHEMA.containsField(actual.getName())) {
                problems.add("unexpected column " + actual.getName());
            }
        }
        if (!problems.isEmpty()) {
            throw new FileFailure(file, "not the image schema: " + String.join("; ", problems)
                + " (schema: " + oneLine(schema.toString()) + ")");
        }
    }

    /** Strings must be annotated STRING; integers may carry a signed INT annotation of their width. */
    private static boolean sameLogicalType(PrimitiveType actual, PrimitiveType expected) {
        LogicalTypeAnnotation a = actual.getLogicalTypeAnnotation();
        LogicalTypeAnnotation e = expected.getLogicalTypeAnnotation();
        if (e != null) {
            return e.equals(a);
        }
        if (a == null) {
            return true;
        }
        int bits = expected.getPrimitiveTypeName() == PrimitiveTypeName.INT32 ? 32
            : expected.getPrimitiveTypeName() == PrimitiveTypeName.INT64 ? 64 : -1;
        return bits > 0 && a.equals(LogicalTypeAnnotation.intType(bits, true));
    }

    private void readParquet(Path p) throws FileFailure {
        String file = display(p);
        long expectedRows;
        try (ParquetFileReader footer = ParquetFileReader.open(HadoopInputFile.fromPath(p, conf))) {
            checkSchema(file, footer.getFileMetaData().getSchema());
            expectedRows = footer.getRecordCount();
        } catch (FileFailure e) {
            throw e;
        } catch (Exception e) {
            throw new FileFailure(file, "ParquetFileReader could not open it: " + describe(e));
        }
        long rows = 0;
        try (ParquetReader<Group> reader =
                 ParquetReader.builder(new GroupReadSupport(), p).withConf(conf).build()) {
            Group g;
            while ((g = reader.read()) != null) {
                rows++;
                byte[] bytes = g.getBinary("bytes", 0).getBytes();
                String rest = escape(g.getString("source", 0))
                    + "\t" + g.getLong("seq", 0)
                    + "\t" + g.getLong("batch_ms", 0)
                    + "\t" + escape(g.getString("format", 0))
                    + "\t" + optionalInt(g, "width")
                    + "\t" + optionalInt(g, "height")
                    + "\t" + g.getLong("crc32", 0);
                emit(file, g.getString("name", 0), crc(bytes, 0, bytes.length), bytes.length, rest);
            }
        } catch (Exception e) {
            throw new FileFailure(file, "ParquetReader failed after " + rows + " row(s): "
                + describe(e));
        }
        if (rows != expectedRows) {
            throw new FileFailure(file, "the footer counts " + expectedRows + " rows, the reader read "
                + rows);
        }
    }

    private static String optionalInt(Group g, String field) {
        return g.getFieldRepetitionCount(field) == 0 ? "-" : Integer.toString(g.getInteger(field, 0));
    }

    private void writeParquet(WriteArgs w) throws FileFailure {
        String file = display(w.path);
        try (ParquetWriter<Group> writer =
                 ExampleParquetWriter.builder(HadoopOutputFile.fromPath(w.path, conf))
                     .withConf(conf)
                     .withType(IMAGE_SCHEMA)
                     .build()) {
            SimpleGroupFactory rows = new SimpleGroupFactory(IMAGE_SCHEMA);
            for (int i = 0; i < w.n; i++) {
                byte[] bytes = sampleBytes(i);
                Group g = rows.newGroup()
                    .append("name", sampleName(i))
                    .append("source", "src-" + (i % 3))
                    .append("seq", (long) i)
                    .append("batch_ms", 1_700_000_000_000L + i)
                    .append("format", "bin");
                if (i % 2 == 0) {
                    g.append("width", i).append("height", 2 * i);
                }
                g.append("crc32", crc(bytes, 0, bytes.length))
                    .append("bytes", org.apache.parquet.io.api.Binary.fromConstantByteArray(bytes));
                writer.write(g);
            }
        } catch (Exception e) {
            throw new FileFailure(file, "ParquetWriter failed: " + describe(e));
        }
    }

    // ---- shared ------------------------------------------------------------------------------

    private record WriteArgs(Path path, int n) {}

    private static WriteArgs writeArgs(List<String> rest) {
        if (rest.size() != 2) {
            usage("a write mode takes a path and a record count");
        }
        try {
            int n = Integer.parseInt(rest.get(1));
            if (n < 0) {
                usage("the record count must not be negative");
            }
            return new WriteArgs(toPath(rest.get(0)), n);
        } catch (NumberFormatException e) {
            usage("the record count " + rest.get(1) + " is not a number");
            throw new AssertionError();
        }
    }

    static String sampleName(int i) {
        return "img-" + i + ".bin";
    }

    static byte[] sampleBytes(int i) {
        byte[] b = new byte[i];
        java.util.Arrays.fill(b, (byte) (i % 251));
        return b;
    }

    private void emit(String file, String name, long crc, int length, String rest) {
        StringBuilder sb = new StringBuilder();
        sb.append(file).append('\t').append(escape(name)).append('\t').append(length).append('\t')
            .append(String.format("%08x", crc));
        if (rest != null) {
            sb.append('\t').append(rest);
        }
        out.println(sb);
    }

    private static long crc(byte[] b, int off, int len) {
        CRC32 c = new CRC32();
        c.update(b, off, len);
        return c.getValue();
    }

    static String escape(String s) {
        StringBuilder sb = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '\\' -> sb.append("\\\\");
                case '\t' -> sb.append("\\t");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                default -> sb.append(c);
            }
        }
        return sb.toString();
    }

    private static String describe(Throwable e) {
        StringBuilder sb = new StringBuilder();
        Throwable t = e;
        for (int depth = 0; t != null && depth < 4; depth++, t = t.getCause()) {
            if (depth > 0) {
                sb.append(" <- ");
            }
            sb.append(t.getClass().getName()).append(": ").append(t.getMessage());
        }
        return oneLine(sb.toString());
    }

    private static String oneLine(String s) {
        return s == null ? "" : s.replace('\n', ' ').replace('\r', ' ');
    }

    private static void usage(String why) {
        System.err.println("ERROR usage: " + why + "\n"
            + "usage: Main seq|seq-meta|text|parquet PATH... | write-seq PATH N | write-parquet PATH N");
        System.exit(2);
    }
}
