//! The Python code-interpreter guest: a reactor holding one RustPython interpreter, so the variables,
//! functions and imports of a context live in the process's linear memory and survive a pause.
//!
//! It exports the `execute` handler of the interpreter protocol (`stasis_guest::interpreter`): the request
//! is a cell of Python source, the response the `repr` of its trailing expression (when that is not `None`)
//! or the error it raised, and the execution count. What the cell prints goes to stdout and stderr, flushed
//! before the handler returns.
//!
//! The cell is parsed once in Rust; when its last statement is an expression, the statements before it are
//! compiled in `exec` mode and the expression in `eval` mode from the same parsed tree, so line numbers in
//! tracebacks stay those of the cell. (RustPython's own "block expression" mode panics on a cell that ends
//! in a bare constant.) Running the code, the environment variables and the formatting of errors are done
//! by a small Python driver (`driver.py`), in a namespace apart from the user's.
//!
//! The same module is also `python3`, the command-line program: it exports the `main` handler of the
//! program convention (`stasis_guest::program`, implemented in [`program`]). A process is one or the other.

use std::cell::RefCell;

use rustpython::InterpreterBuilderExt;
use rustpython::vm::builtins::{PyCode, PyStr, PyTuple};
use rustpython::vm::compiler::core::SourceFileBuilder;
use rustpython::vm::compiler::{CompileError, Mode, ast, codegen, parser};
use rustpython::vm::{
    Interpreter, InterpreterBuilder, PyObjectRef, PyRef, PyResult, Settings, VirtualMachine,
};
use stasis_guest::interpreter::{ExecuteRequest, ExecuteResponse, ExecutionError, ExecutionResult};

mod program;

/// The Python half of the guest: runs compiled cells and describes their outcome.
const DRIVER: &str = include_str!("driver.py");

thread_local! {
    /// The context of this process, created by the first cell. A reactor is single-threaded, so this is
    /// simply the process's one interpreter.
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Whether this process has become a code-interpreter context (it has run a cell), so it must not run a
/// program.
fn has_context() -> bool {
    CONTEXT.with_borrow(Option::is_some)
}

/// One interpreter and the driver functions it runs cells with.
struct Context {
    interpreter: Interpreter,
    /// `driver.run(body, tail, env)`.
    run: PyObjectRef,
    /// `driver.failed(error)`, for a cell that did not compile.
    failed: PyObjectRef,
    /// `driver.register(filename, source)`.
    register: PyObjectRef,
    /// Cells run so far, this one included once it starts.
    execution_count: u64,
}

impl Context {
    /// Starts an interpreter with the frozen standard library and loads the driver.
    fn new() -> Result<Self, String> {
        let mut settings = Settings::default();
        // An embedded interpreter: no signal handlers, no `.pyc` files written into the sandbox, no
        // environment variables steering the interpreter itself.
        settings.install_signal_handlers = false;
        settings.write_bytecode = false;
        settings.ignore_environment = true;
        let interpreter = InterpreterBuilder::new()
            .settings(settings)
            .init_stdlib()
            .interpreter();
        let functions = interpreter.enter(|vm| {
            let scope = vm.new_scope_with_builtins();
            vm.run_string(scope.clone(), DRIVER, "<stasis-driver>".to_owned())
                .map_err(|error| exception_text(vm, &error))?;
            let get = |name: &str| {
                scope
                    .globals
                    .get_item(name, vm)
                    .map_err(|error| exception_text(vm, &error))
            };
            Ok::<_, String>((get("run")?, get("failed")?, get("register")?))
        })?;
        let (run, failed, register) = functions;
        Ok(Self {
            interpreter,
            run,
            failed,
            register,
            execution_count: 0,
        })
    }

    /// Runs one cell.
    fn execute(&mut self, request: &ExecuteRequest) -> Result<ExecuteResponse, String> {
        self.execution_count += 1;
        let execution_count = self.execution_count;
        let filename = format!("<cell-{execution_count}>");
        let outcome = self.interpreter.enter(|vm| {
            let outcome = match compile_cell(vm, &request.code, &filename) {
                Ok((body, tail)) => {
                    self.register.call(
                        (
                            vm.ctx.new_str(filename.as_str()),
                            vm.ctx.new_str(request.code.as_str()),
                        ),
                        vm,
                    )?;
                    let env = vm.ctx.new_dict();
                    for (key, value) in &request.env_vars {
                        env.set_item(key.as_str(), vm.ctx.new_str(value.as_str()).into(), vm)?;
                    }
                    let code = |code: Option<PyRef<PyCode>>| {
                        code.map_or_else(|| vm.ctx.none(), Into::into)
                    };
                    self.run.call((code(body), code(tail), env), vm)?
                }
                Err(error) => self.failed.call((error,), vm)?,
            };
            Outcome::from_python(vm, outcome)
        });
        let outcome = outcome.map_err(|error| {
            self.interpreter
                .enter(|vm| format!("the interpreter failed: {}", exception_text(vm, &error)))
        })?;
        Ok(ExecuteResponse {
            results: outcome
                .value
                .map(|text| ExecutionResult {
                    text,
                    is_main_result: true,
                })
                .into_iter()
                .collect(),
            error: outcome.error,
            execution_count,
        })
    }
}

/// What the driver reported for a cell.
struct Outcome {
    /// The `repr` of the trailing expression's value, unless it was `None`.
    value: Option<String>,
    /// The exception the cell raised.
    error: Option<ExecutionError>,
}

impl Outcome {
    /// Reads the driver's `(repr or None, (name, message, traceback) or None)`.
    fn from_python(vm: &VirtualMachine, outcome: PyObjectRef) -> PyResult<Self> {
        let [value, error] = tuple::<2>(vm, outcome)?;
        let value = optional_text(vm, value)?;
        let error = if vm.is_none(&error) {
            None
        } else {
            let [name, value, traceback] = tuple::<3>(vm, error)?;
            Some(ExecutionError {
                name: text(vm, name)?,
                value: text(vm, value)?,
                traceback: text(vm, traceback)?,
            })
        };
        Ok(Self { value, error })
    }
}

/// The `N` items of a tuple the driver returned.
fn tuple<const N: usize>(vm: &VirtualMachine, object: PyObjectRef) -> PyResult<[PyObjectRef; N]> {
    let tuple = object
        .downcast::<PyTuple>()
        .map_err(|_| vm.new_type_error("the driver returned something else than a tuple"))?;
    <[PyObjectRef; N]>::try_from(tuple.as_slice().to_vec()).map_err(|_| {
        vm.new_type_error(format!(
            "the driver returned a tuple of another length than {N}"
        ))
    })
}

/// A `str` as Rust text (lone surrogates replaced).
fn text(vm: &VirtualMachine, object: PyObjectRef) -> PyResult<String> {
    let string = object
        .downcast::<PyStr>()
        .map_err(|_| vm.new_type_error("the driver returned something else than a str"))?;
    Ok(string.to_string_lossy().into_owned())
}

/// `None` or a `str` as Rust text.
fn optional_text(vm: &VirtualMachine, object: PyObjectRef) -> PyResult<Option<String>> {
    if vm.is_none(&object) {
        Ok(None)
    } else {
        text(vm, object).map(Some)
    }
}

/// A cell's statements (`exec`) and its trailing expression (`eval`), either of which may be absent.
type CompiledCell = (Option<PyRef<PyCode>>, Option<PyRef<PyCode>>);

/// Compiles a cell into its statements (`exec`) and its trailing expression (`eval`), either of which may
/// be absent; a syntax error comes back as the `SyntaxError` exception Python would raise.
fn compile_cell(
    vm: &VirtualMachine,
    source: &str,
    filename: &str,
) -> Result<CompiledCell, PyObjectRef> {
    let source_file = SourceFileBuilder::new(filename, source).finish();
    let syntax_error =
        |error: CompileError| -> PyObjectRef { vm.new_syntax_error(&error, Some(source)).into() };
    let mut module = parser::parse_module(source)
        .map_err(|error| syntax_error(CompileError::from_ruff_parse_error(error, &source_file)))?
        .into_syntax();
    let tail = match module.body.pop() {
        Some(ast::Stmt::Expr(statement)) => Some(ast::ModExpression {
            node_index: Default::default(),
            range: statement.range,
            body: statement.value,
        }),
        Some(other) => {
            module.body.push(other);
            None
        }
        None => None,
    };
    let compile = |tree: ast::Mod, mode: Mode| {
        codegen::compile::compile_top(tree, source_file.clone(), mode, vm.compile_opts())
            .map(|code| vm.ctx.new_code(code))
            .map_err(|error| syntax_error(CompileError::from(error)))
    };
    let body = if module.body.is_empty() {
        None
    } else {
        Some(compile(ast::Mod::Module(module), Mode::Exec)?)
    };
    let tail = tail
        .map(|expression| compile(ast::Mod::Expression(expression), Mode::Eval))
        .transpose()?;
    Ok((body, tail))
}

/// An exception as the interpreter would print it, for failures of the guest itself.
fn exception_text(
    vm: &VirtualMachine,
    error: &rustpython::vm::builtins::PyBaseExceptionRef,
) -> String {
    let mut text = String::new();
    if vm.write_exception(&mut text, error).is_err() {
        text = "an exception that could not be formatted".to_owned();
    }
    text
}

/// The `execute` handler: runs a JSON [`ExecuteRequest`] and answers a JSON [`ExecuteResponse`].
fn execute(request: &[u8]) -> Result<Vec<u8>, String> {
    let request: ExecuteRequest =
        serde_json::from_slice(request).map_err(|e| format!("invalid execute request: {e}"))?;
    if program::started() {
        return Err("this process runs a program; cells need a process of its own".into());
    }
    let response = CONTEXT.with_borrow_mut(|slot| {
        let context = match slot {
            Some(context) => context,
            None => slot.insert(Context::new()?),
        };
        context.execute(&request)
    })?;
    serde_json::to_vec(&response).map_err(|e| format!("encoding the response: {e}"))
}
stasis_guest::export_handler!(execute);

stasis_guest::export_main!(program::main);
stasis_guest::export_preinit!(program::preinit);
