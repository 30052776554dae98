// WebAuthn ceremonies of the hosted pages. A file, not inline: the CSP is script-src 'self'.
// The server sends options as JSON with base64url strings where the browser API wants bytes,
// and expects the credential back in the same JSON shape (WebAuthn L3 "...JSON" dictionaries),
// which py_webauthn parses.
(function () {
  "use strict";

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function fromBase64url(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    const binary = atob(base64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      return Object.assign({}, item, { id: fromBase64url(item.id) });
    });
  }

  function creationOptions(json) {
    return Object.assign({}, json, {
      challenge: fromBase64url(json.challenge),
      user: Object.assign({}, json.user, { id: fromBase64url(json.user.id) }),
      excludeCredentials: descriptors(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    return Object.assign({}, json, {
      challenge: fromBase64url(json.challenge),
      allowCredentials: descriptors(json.allowCredentials),
    });
  }

  function credentialToJSON(credential) {
    const r = credential.response;
    const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toBase64url(r.attestationObject);
      response.transports = typeof r.getTransports === "function" ? r.getTransports() : [];
    } else {
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || null,
    };
  }

  // Options come from a POST (they create a challenge); the CSRF token travels in a header.
  async function fetchOptions(url, form) {
    const token = form.querySelector('input[name="csrf_token"]');
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": token ? token.value : "", Accept: "application/json" },
    });
    if (response.redirected) {
      // The server wants a fresh sign-in first (re-authentication): go there.
      window.location.assign(response.url);
      return null;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      body = null;
    }
    if (!response.ok || !body) {
      throw new Error((body && body.error_description) || "Something went wrong. Reload the page and try again.");
    }
    return body;
  }

  function friendly(error) {
    switch (error && error.name) {
      case "NotAllowedError":
        return "The request was cancelled or timed out. Try again when you are ready.";
      case "InvalidStateError":
        return "This passkey or security key is already registered to your account.";
      case "SecurityError":
        return "Passkeys cannot be used on this address. Contact your administrator.";
      case "NotSupportedError":
        return "This passkey or security key is not supported. Try another one.";
      default:
        return (error && error.message) || "Something went wrong. Try again.";
    }
  }

  function errorBox(near) {
    let box = document.getElementById("webauthn-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "webauthn-error";
      box.className = "error";
      box.setAttribute("role", "alert");
      near.parentNode.insertBefore(box, near);
    }
    return box;
  }

  // Runs one ceremony from a button: no double clicks, and every failure shown in the alert box.
  function wire(button, form, ceremony) {
    async function run() {
      const box = errorBox(form);
      box.hidden = true;
      if (!window.PublicKeyCredential || !navigator.credentials) {
        box.textContent = "This browser cannot use passkeys or security keys.";
        box.hidden = false;
        return;
      }
      button.disabled = true;
      try {
        await ceremony();
      } catch (error) {
        box.textContent = friendly(error);
        box.hidden = false;
        button.disabled = false;
      }
    }
    button.addEventListener("click", run);
    // Enter in a text field would post the form without a credential: run the ceremony instead.
    form.addEventListener("submit", function (event) {
      const credential = form.querySelector('input[name="credential"]');
      if (credential && !credential.value) {
        event.preventDefault();
        run();
      }
    });
  }

  async function getAssertion(button, form, field) {
    const options = await fetchOptions(button.dataset.optionsUrl, form);
    if (!options) return;
    const credential = await navigator.credentials.get({ publicKey: requestOptions(options) });
    field.value = JSON.stringify(credentialToJSON(credential));
    form.submit();
  }

  function init() {
    // (a) Second-factor step: the passkey or security key of the account being signed in.
    const secondFactor = document.getElementById("webauthn-start");
    const secondFactorForm = document.getElementById("second-factor-form");
    if (secondFactor && secondFactorForm) {
      wire(secondFactor, secondFactorForm, function () {
        return getAssertion(secondFactor, secondFactorForm, document.getElementById("webauthn-credential"));
      });
    }

    // (b) Sign-in page: a discoverable passkey, no email or password.
    const signIn = document.getElementById("passkey-sign-in");
    const signInForm = document.getElementById("passkey-form");
    if (signIn && signInForm) {
      wire(signIn, signInForm, function () {
        return getAssertion(signIn, signInForm, signInForm.querySelector('input[name="credential"]'));
      });
    }

    // (c) Security page: register a new passkey or security key.
    const register = document.getElementById("passkey-register");
    const registerForm = document.getElementById("passkey-register-form");
    if (register && registerForm) {
      wire(register, registerForm, async function () {
        const options = await fetchOptions(register.dataset.optionsUrl, registerForm);
        if (!options) return;
        const credential = await navigator.credentials.create({ publicKey: creationOptions(options) });
        registerForm.querySelector('input[name="credential"]').value = JSON.stringify(credentialToJSON(credential));
        registerForm.action = register.dataset.finishUrl;
        registerForm.submit();
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
